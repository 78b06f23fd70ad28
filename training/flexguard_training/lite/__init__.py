"""Training of the embedded lite scorer (FlexGuard-Lite v2): data, fine-tuning, evaluation, CLI."""
