"""Defaults and choices that the Python API and the command line share, defined once so they cannot drift.

Plain Python, no NumPy: the command modules read these while they build ``--help``.
"""

#: Tubes whose mean tubelet score is below this are not listed in a frame's result
#: (``Runtime(min_tube_score=)``, ``edge-stad run --min-score``, the demo, ``edge-stad bench``). At 0.1 the
#: demo engine listed about 24 tubes per frame of a synthetic test video, mostly short-lived low-scored
#: ones; at 0.2 about 2, the actors.
MIN_TUBE_SCORE = 0.2

#: How equal scores rank in the evaluation (``evaluate(ties=)``, ``edge-stad eval --ties``); see
#: :func:`edge_stad.boxes.check_ties`.
TIES = ("stable", "reference")

#: The INT8 accuracy gate (``BuildOptions``, ``edge-stad build``): the largest frame-mAP drop from FP32 (points)
#: an INT8 engine may have, and the FP32 frame-mAP (points) below which the gate is not applicable: a model
#: that detects nothing loses nothing to INT8, so comparing the two says nothing about the quantization.
MAX_MAP_DROP = 1.0
GATE_MIN_FP32_MAP = 1.0
