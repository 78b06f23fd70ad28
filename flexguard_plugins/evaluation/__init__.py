"""Evaluation and calibration for deployments: FlexBench loading, metrics, eval, calibrate, baselines."""
