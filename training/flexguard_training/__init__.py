"""FlexGuard training and evaluation: data preparation, SFT, LoRA merge, GRPO, FlexBench eval, calibration.

Commands: `flexguard train prepare|sft|merge|grpo|lite`, `flexguard eval`, `flexguard calibrate`.
Prompts, parsing and policy come from `flexguard_plugins`, so training and inference share one format.
"""
