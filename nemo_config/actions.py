"""Loaded by NeMo from this config folder; the actions live in the importable rail (`flexguard_nemo.rail`)."""

from flexguard_nemo.rail.actions import flexguard_check_input, flexguard_check_output

__all__ = ["flexguard_check_input", "flexguard_check_output"]
