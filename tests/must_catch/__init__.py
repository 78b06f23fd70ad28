"""The must-catch suite: hand-written moderation cases with tier-band expectations (see README.md)."""
