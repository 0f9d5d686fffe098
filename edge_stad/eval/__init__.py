"""Evaluation with the ACT protocol: frame-mAP, video-mAP, the frame-mAP error breakdown,
and the detections file that ``edge-stad run`` writes and ``edge-stad eval`` reads.
"""
