"""FlexGuard training: data preparation, SFT, LoRA merge, GRPO and its reward (the `[train]` extra).

Commands: `flexguard train prepare|sft|merge|grpo|lite`. Evaluation and calibration are part of the
product, not of training: `flexguard_plugins.evaluation` (`flexguard eval`, `flexguard calibrate`).
Prompts, parsing and policy come from `flexguard_plugins`, so training and inference share one format.
"""
