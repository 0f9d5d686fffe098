"""Benchmarking: model complexity (``complexity``, needs torch), interleaved latency measurement
(``latency``) and result files (``results``); the full speed/power harness comes later."""
