"""Which frames a K-clip sample reads, and which (video, frame) pairs make training samples.

A sample keyed by frame ``f`` is K clips of ``clip_len`` consecutive frames; clip k ends
at ``e_k = max(1, f - (K-1-k) * clip_len)`` and holds ``max(1, e_k - n + 1) .. e_k``:
the clips tile ``[f - K*n + 1, f]`` without overlap, frame 1 repeated before the start
(reference section 3.1). Ground-truth boxes are taken at the K clip-end frames.
"""
from edge_stad.core.windows import clip_ending_at, first_frame, regular_window


def clip_frames(frame, K, clip_len):
    """Frame numbers (1-based) of the K clips ending at ``frame``, oldest clip and frame first."""
    return [clip_ending_at(end, clip_len) for end in regular_window(frame, K, clip_len)]


def training_samples(gt, videos, K, clip_len):
    """``(video, frame)`` pairs the reference trains on.

    Frame ``f`` qualifies when the span ``[f - s0 + 1, f]`` (``s0`` the video's first
    processed frame, so the span covers the K clip-end frames) lies entirely inside or
    entirely outside every ground-truth tube of the video, and inside at least one: a
    sample never straddles an action's start or end.
    """
    samples = []
    for video in videos:
        nframes = gt.nframes[video]
        if nframes < clip_len:
            continue
        s0 = first_frame(K, clip_len, nframes)
        spans = [(int(t[0, 0]), int(t[-1, 0])) for tubes in gt.gttubes[video].values() for t in tubes]
        for f in range(s0, nframes + 1):
            lo, hi = f - s0 + 1, f
            inside = [start <= lo and hi <= end for start, end in spans]
            outside = [end < lo or hi < start for start, end in spans]
            if any(inside) and all(i or o for i, o in zip(inside, outside)):
                samples.append((video, f))
    return samples


def tube_boxes_at(gt, video, frames):
    """``{label: [float32 (len(frames), 4) boxes]}`` of the tubes that cover all ``frames``."""
    out = {}
    for label, tubes in gt.gttubes[video].items():
        for tube in tubes:
            start, end = int(tube[0, 0]), int(tube[-1, 0])
            if all(start <= f <= end for f in frames):
                rows = [f - start for f in frames]
                out.setdefault(label, []).append(tube[rows, 1:5].astype("float32"))
    return out
