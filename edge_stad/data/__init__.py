"""Datasets: ACT-layout annotations (ground-truth tubes), readers and clip sampling."""
