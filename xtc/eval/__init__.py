"""Measurement: completion quality on a benchmark set (quality) and speed on this machine (speed)."""
