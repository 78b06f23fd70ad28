"""FlexGuard's NeMo Guardrails config folder: point `RailsConfig.from_path` at it (see README.md)."""
