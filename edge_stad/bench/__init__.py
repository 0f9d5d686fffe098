"""Benchmarking: model complexity (``complexity``, needs torch) and, later, the speed/power harness."""
