"""The shared tube core (NumPy only, Python 3.8+): the window schedule, the decoders of every model family's
outputs, online and offline tube linking with its box math, and per-frame detections.

The runtime streams with it, evaluation and benchmarks score with it, data and training build their
targets and samples with it, quantization calibrates on its windows; it imports none of them.
"""
