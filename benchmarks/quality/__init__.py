"""Sample quality side by side with flow_matching and torchcfm at equal budget (``python -m benchmarks.quality``).

:mod:`.toy_sets` (the examples' data in numpy), :mod:`.spec` (run names, swaps, shared
data), :mod:`.jflow_runner` and :mod:`.torch_runner` (one per side), :mod:`.report`
(metrics, Welch tests, table), ``__main__`` (workers and resume).
"""
