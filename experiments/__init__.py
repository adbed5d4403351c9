"""Experiment scripts built on jflow (never imported by the library)."""
