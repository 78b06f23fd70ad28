"""Evaluation and calibration for deployments (the `[eval]` extra: pandas, matplotlib, datasets, scipy).

`flexbench` loads FlexBench-format data, `metrics` holds the pure metric functions, `evaluate` is
`flexguard eval`, `calibrate` is `flexguard calibrate`, `baselines` the scorers eval can run (FlexGuard,
plugged-in callables, and other guards through their own prompt and parser). Nothing here imports
torch, TRL or PEFT; a model backend loads what it needs only when asked for.
"""
