"""jflow's speed and quality benchmarks: scripts run as ``python -m benchmarks.<name>`` (see README.md).

:mod:`benchmarks.harness` holds the measuring tools they share. No test is timed; the
benchmarks never run in CI.
"""
