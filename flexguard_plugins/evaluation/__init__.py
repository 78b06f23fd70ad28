"""Evaluation and calibration for deployments (the `[eval]` extra: pandas, matplotlib, datasets, scipy).

`flexbench` loads FlexBench-format data, `metrics` and `thresholds` hold the pure metric and threshold
functions, `evaluate` is `flexguard eval` (saving scores through `scores`, writing `report`), `calibrate`
is `flexguard calibrate`, `baselines` the scorers eval can run (FlexGuard, plugged-in callables), and
`guards` and `generators` other guards through their own prompt and parser. Nothing here imports torch,
TRL or PEFT; a model backend loads what it needs only when asked for.
"""
