"""A deliberately plain, loop-per-box implementation of the ACT protocol, for tests.

Written from the protocol description (the ACT protocol of Kalogeiton et al., ICCV 2017), not from
edge_stad's code: one Python loop per box, tubelet, tube or detection, scalar
arithmetic only. The fast implementations must agree with it exactly (linking) or to
1e-6 (metrics). It follows edge_stad's documented choices: stable tie order (input
order wins), float32 box arithmetic where the reference uses float32 arrays, float32
PR values and a float64 trapezoid. The ``order`` / ``nms_order`` parameters take
:func:`reference_desc` and :func:`reference_nms_order` instead: the sorts the authors' ACT
code runs (``np.argsort(-score)`` in frameAP and videoAP, ``np.argsort(score)[::-1]`` in
``nms2d`` and ``nms_tubelets``, ``nms3dt`` visiting an ascending ``np.argsort`` from the end).
"""
import numpy as np

F32 = np.float32
# Constants are spelled F32(...): NumPy 1.x turns np.float32 (op) Python number into float64.


# ---------------------------------------------------------------- boxes (scalars)

def box_iou(a, b):
    """ACT iou2d for two boxes of float32 scalars."""
    one, zero = F32(1), F32(0)
    w = max(zero, min(a[2] + one, b[2] + one) - max(a[0], b[0]))
    h = max(zero, min(a[3] + one, b[3] + one) - max(a[1], b[1]))
    ov = w * h
    return ov / ((a[2] - a[0] + one) * (a[3] - a[1] + one) + (b[2] - b[0] + one) * (b[3] - b[1] + one) - ov)


def nms_box_iou(a, b):
    """IoU of two float32-scalar boxes with the arithmetic of the reference's NMS loops."""
    one, zero = F32(1), F32(0)
    w = max(zero, min(a[2], b[2]) - max(a[0], b[0]) + one)
    h = max(zero, min(a[3], b[3]) - max(a[1], b[1]) + one)
    inter = w * h
    return inter / ((a[2] - a[0] + one) * (a[3] - a[1] + one) + (b[2] - b[0] + one) * (b[3] - b[1] + one) - inter)


def gt_det_iou(g, d):
    """iou2d of a float64 GT box and a float32 detection box: the detection's +1 and
    area are float32 (array arithmetic in the reference), then promoted to float64."""
    g = [float(v) for v in g]
    d = [F32(v) for v in d]
    w = max(0.0, min(g[2] + 1.0, float(d[2] + F32(1))) - max(g[0], float(d[0])))
    h = max(0.0, min(g[3] + 1.0, float(d[3] + F32(1))) - max(g[1], float(d[1])))
    ov = w * h
    garea = (g[2] - g[0] + 1.0) * (g[3] - g[1] + 1.0)
    darea = float((d[2] - d[0] + F32(1)) * (d[3] - d[1] + F32(1)))
    return ov / (garea + darea - ov)



def claim(gt, key, det, iou, th):
    """ACT's greedy match: take the unmatched ground truth of ``key`` with the highest IoU
    (the first on ties) if it reaches ``th``; it is then removed. Returns whether one was taken."""
    if key not in gt:
        return False
    ious = [iou(g, det) for g in gt[key]]
    best = max(range(len(ious)), key=lambda i: (ious[i], -i))
    if ious[best] < th:
        return False
    del gt[key][best]
    if not gt[key]:
        del gt[key]
    return True

def stable_desc(values):
    """Indices from the highest value down, ties in input order (plain sort)."""
    return sorted(range(len(values)), key=lambda i: -values[i])


def reference_desc(values):
    """The authors' ranking: ``np.argsort(-values)``, NumPy's default sort, on float32 values."""
    return np.argsort(-np.asarray(values, dtype=F32)).tolist()


def reference_nms_order(values):
    """The authors' NMS visiting order: ``np.argsort(values)[::-1]`` on float32 values."""
    return np.argsort(np.asarray(values, dtype=F32))[::-1].tolist()


def ap_from_pr(pr):
    """Trapezoid area under [(p, r), ...] (float32 values) starting at (1, 0), in float64."""
    total = 0.0
    for (p0, r0), (p1, r1) in zip(pr, pr[1:]):
        total += (float(r1) - float(r0)) * (float(p1) + float(p0)) * 0.5
    return total


# ---------------------------------------------------------------- tubelet NMS and BuildTubes

def plain_tubelet_nms(tubelets, threshold=0.6, top_k=10, order=stable_desc):
    rows = [list(r) for r in np.asarray(tubelets, dtype=F32)]
    if not rows:
        return np.zeros((0, np.asarray(tubelets).shape[1]), dtype=F32)
    K = (len(rows[0]) - 1) // 4
    scores = [r[-1] for r in rows]
    weight = [F32(1)] * len(rows)
    visit = order(scores)
    while visit:
        top, rest = visit[0], visit[1:]
        remaining = []
        for j in rest:
            s = F32(0)
            for k in range(K):
                s = s + nms_box_iou(rows[top][4 * k:4 * k + 4], rows[j][4 * k:4 * k + 4])
            if s > F32(threshold * K):
                weight[j] = F32(1) - s
            else:
                remaining.append(j)
        visit = remaining
    new = [scores[i] * weight[i] for i in range(len(rows))]
    out = []
    for i in order(new)[:top_k]:
        out.append(rows[i][:-1] + [new[i]])
    return np.array(out, dtype=F32)


def plain_build_tubes(windows, K, n, nframes, labels, nms_order=stable_desc):
    """BuildTubes with lists of tubes, one loop per tube and per box.

    ``windows``: list of (frames tuple, {label: (m, 4K+1) array}) in processing order.
    Returns {label: [(out (L, 6) float32, score float)]}.
    """
    result = {}
    for label in labels:
        current, finished = [], []
        for frames, dets in windows:
            f = frames[-1]
            cand = plain_tubelet_nms(dets.get(label, np.zeros((0, 4 * K + 1), F32)), order=nms_order)
            cand = [row for row in cand]
            # rank by mean tubelet score (the reference's float32 np.mean), ties keep order
            means = [np.mean(np.array([t[1][-1] for t in tube], dtype=F32)) for tube in current]
            current = [current[i] for i in stable_desc(means)]
            done = []
            for it, tube in enumerate(current):
                lf, lt = tube[-1][0][-1], tube[-1][1]
                o = round((f - lf) / n)
                scores = []
                for c in cand:
                    if o < K:
                        s = F32(0)
                        for i in range(K - o):
                            s = s + box_iou(c[4 * i:4 * i + 4], lt[4 * (i + o):4 * (i + o) + 4])
                        scores.append(s / F32(K - o))
                    else:
                        scores.append(box_iou(c[0:4], lt[4 * K - 4:4 * K]))
                best = None
                for j, c in enumerate(cand):
                    if scores[j] >= 0.5 and (best is None or c[-1] > cand[best][-1]):
                        best = j
                if best is not None:
                    tube.append((frames, cand.pop(best)))
                elif o >= K:
                    done.append(it)
            for it in reversed(done):
                finished.append(current.pop(it))
            current += [[(frames, c)] for c in cand]
        finished += current
        last = windows[-1][0][-1]
        out = []
        for tube in finished:
            built = plain_assemble(tube, K, n, min(last, n * K))
            if built is not None:
                out.append(built)
        result[label] = out
    return result


def plain_assemble(tube, K, n, min_length):
    if len(tube) < 2:
        return None
    score = np.mean(np.array([t[1][-1] for t in tube], dtype=F32))
    if float(score) < 0.005:
        return None
    begin = max(tube[0][0][-1] - n * (K - 1), 1)
    end = tube[-1][0][-1]
    if end - begin + 1 < min_length:
        return None
    out = np.zeros((end - begin + 1, 6), dtype=F32)
    out[:, 0] = np.arange(begin, end + 1)
    count = [0] * len(out)
    for frames, row in tube:
        for k in reversed(range(K)):
            r = frames[k] - begin
            for c in range(4):
                out[r, 1 + c] = out[r, 1 + c] + row[4 * k + c]
            out[r, 5] = out[r, 5] + row[-1]
            count[r] += 1
    for r in range(len(out)):
        if count[r]:
            for c in range(1, 6):
                out[r, c] = out[r, c] / F32(count[r])
    filled = [r for r in range(len(out)) if count[r]]
    for lo, hi in zip(filled, filled[1:]):
        for r in range(lo + 1, hi):
            for c in range(1, 5):
                out[r, c] = out[lo, c] + F32(r - lo) * ((out[hi, c] - out[lo, c]) / F32(hi - lo))
            out[r, 5] = (out[lo, 5] + out[hi, 5]) / F32(2)
    return out, float(score)


# ---------------------------------------------------------------- per-frame detections

def plain_soft_nms(rows, threshold=0.6, order=stable_desc):
    """rows: list of [x1, y1, x2, y2, score] float32 scalars; rescales the scores in place."""
    weight = [F32(1)] * len(rows)
    visit = order([r[4] for r in rows])
    while visit:
        top, remaining = visit[0], []
        for j in visit[1:]:
            ov = nms_box_iou(rows[top], rows[j])
            if ov > F32(threshold):
                weight[j] = F32(1) - ov
            else:
                remaining.append(j)
        visit = remaining
    for r, w in zip(rows, weight):
        r[4] = r[4] * w


def plain_frame_detections(windows, K, mode, num_labels, cap=10000, nms_order=stable_desc):
    """Per-frame rows [frame, label, score, x1, y1, x2, y2] of one video (§4.1)."""
    per_frame = {}

    def room(g):
        have = len(per_frame.get(g, []))
        return have <= cap if mode == "normal" else have < cap

    for frames, dets in windows:
        for label in sorted(dets):
            tubelets = [list(r) for r in np.asarray(dets[label], dtype=F32)]
            if not tubelets:
                continue
            for k in reversed(range(K)):
                g = frames[k]
                if room(g):
                    for t in tubelets:
                        per_frame.setdefault(g, []).append([t[4 * k + c] for c in range(4)] + [t[-1], label])
            if mode != "stream":
                continue
            for k in range(K - 1):
                gap = frames[k + 1] - frames[k]
                for t in tubelets:
                    for g in range(frames[k] + 1, frames[k + 1]):
                        if len(per_frame.get(g, [])) < cap:
                            box = [t[4 * k + c] + F32(g - frames[k]) * ((t[4 * k + 4 + c] - t[4 * k + c]) / F32(gap))
                                   for c in range(4)]
                            per_frame.setdefault(g, []).append(box + [t[-1], label])
    out = []
    for g in sorted(per_frame):
        rows = per_frame[g]
        for label in range(num_labels):
            mine = [r for r in rows if r[5] == label]
            plain_soft_nms(mine, order=nms_order)
        for r in rows:
            out.append([g, r[5], r[4]] + r[:4])
    return np.array(out, dtype=F32).reshape(-1, 7)


# ---------------------------------------------------------------- frame-mAP and its errors

def _gt_boxes(gttubes, videos, label):
    gt = {}
    for v in videos:
        for tube in gttubes[v].get(label, []):
            for row in tube:
                gt.setdefault((v, int(row[0])), []).append([float(x) for x in row[1:5]])
    return gt


def _sorted_dets(dets, videos, label, order=stable_desc):
    flat = []
    for v in videos:
        for row in dets.get(v, np.zeros((0, 7), F32)):
            if int(row[1]) == label:
                flat.append((v, int(row[0]), row[2], row[3:7]))
    return [flat[i] for i in order([d[2] for d in flat])]


def plain_frame_ap(dets, gttubes, videos, label, th=0.5, mode="untrimmed", order=stable_desc):
    gt = _gt_boxes(gttubes, videos, label)
    original = set(gt)
    videos_with_gt = {v for (v, _) in gt}
    npos = sum(len(b) for b in gt.values())
    tp = fp = 0
    pr = [(F32(1), F32(0))]
    for v, f, _score, box in _sorted_dets(dets, videos, label, order):
        key = (v, f)
        positive = claim(gt, key, box, gt_det_iou, th)
        if mode == "trimmed" and v in videos_with_gt and key not in original:
            continue
        if positive:
            tp += 1
        else:
            fp += 1
        if npos == 0:
            continue
        pr.append((F32(tp / (tp + fp)), F32(tp / npos)))
    return ap_from_pr(pr)


def plain_frame_errors(dets, gttubes, videos, label, th=0.5):
    """[AP, loc, cls, time, other, missed] fractions for one label (every detection counts)."""
    gt = _gt_boxes(gttubes, videos, label)
    full = {k: list(b) for k, b in gt.items()}
    other = {}
    for v in videos:
        for lab, tubes in gttubes[v].items():
            if lab == label:
                continue
            for tube in tubes:
                for row in tube:
                    other.setdefault((v, int(row[0])), []).append([float(x) for x in row[1:5]])
    npos = sum(len(b) for b in gt.values())
    tp = fp = 0
    errs = [0, 0, 0, 0]
    curves = [[(F32(1), F32(0))]] + [[(F32(0), F32(0))] for _ in range(4)]  # error rates start at 0
    for v, f, _score, box in _sorted_dets(dets, videos, label):
        key = (v, f)
        positive = False
        if key in full:
            positive = claim(gt, key, box, gt_det_iou, th)
            if not positive:
                errs[0] += 1
        elif key in other:
            errs[1 if max(gt_det_iou(g, box) for g in other[key]) >= th else 3] += 1
        elif label in gttubes[v]:
            errs[2] += 1
        else:
            errs[3] += 1
        if positive:
            tp += 1
        else:
            fp += 1
        recall = F32(tp / npos) if npos else F32(0)
        curves[0].append((F32(tp / (tp + fp)), recall))
        for e in range(4):
            curves[1 + e].append((F32(errs[e] / (tp + fp)), recall))
    final_recall = float(curves[0][-1][1])
    return [ap_from_pr(c) for c in curves] + [1.0 - final_recall]


# ---------------------------------------------------------------- video-mAP

def plain_tube_iou(a, b):
    """iou3dt of tubes a, b ((L, >=5) arrays, one row per frame); frame IoU as gt_det_iou
    when a is float64 (GT) and b float32, else in float32; temporal factor in float64."""
    start, stop = max(a[0, 0], b[0, 0]), min(a[-1, 0], b[-1, 0])
    if stop < start:
        return 0.0
    inter = float(stop) - float(start) + 1
    union = float(max(a[-1, 0], b[-1, 0])) - float(min(a[0, 0], b[0, 0])) + 1
    ious = []
    for f in range(int(start), int(stop) + 1):
        ra, rb = a[f - int(a[0, 0]), 1:5], b[f - int(b[0, 0]), 1:5]
        if a.dtype == np.float64:
            ious.append(gt_det_iou(ra, rb))
        else:
            ious.append(float(box_iou([F32(x) for x in ra], [F32(x) for x in rb])))
    return sum(ious) / len(ious) * (inter / union)


def plain_video_ap(tubes, gttubes, videos, label, th, order=stable_desc, nms_order=stable_desc):
    """tubes: {video: {label: [(out, score)]}}."""
    pooled = []
    for v in videos:
        mine = tubes.get(v, {}).get(label, [])
        visit = nms_order([t[1] for t in mine])
        kept = []
        while visit:
            top = visit[0]
            kept.append(top)
            visit = [i for i in visit[1:] if plain_tube_iou(mine[i][0], mine[top][0]) <= 0.3]
        pooled += [(v, mine[i][1], mine[i][0]) for i in kept]
    gt = {v: list(gttubes[v][label]) for v in videos if gttubes[v].get(label)}
    npos = sum(len(g) for g in gt.values())
    tp = fp = 0
    pr = [(F32(1), F32(0))]
    for i in order([p[1] for p in pooled]):
        v, _, tube = pooled[i]
        positive = claim(gt, v, tube, plain_tube_iou, th)
        if positive:
            tp += 1
        else:
            fp += 1
        pr.append((F32(tp / (tp + fp)), F32(tp / npos) if npos else F32(0)))
    return ap_from_pr(pr)
