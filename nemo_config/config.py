"""Loaded by NeMo for this config folder: the rail's build-time checks and stream set-up (`rail/config.py`)."""

from flexguard_nemo.rail.config import init

__all__ = ["init"]
