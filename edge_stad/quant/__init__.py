"""Reduced precision: calibration windows, INT8 QDQ quantization, sensitivity, the accuracy gate.

FP16 graphs are exported directly in half precision (:mod:`edge_stad.export.graphs`).
"""
