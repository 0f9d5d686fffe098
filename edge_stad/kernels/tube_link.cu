// The two pairwise matrices of online tube linking (edge_stad.runtime.linking), for all labels
// of a window in one launch each; the greedy NMS and assignment stay on the host and read them.
//
// Labels are segments: rows [start[s], start[s + 1]) of the candidate array belong to label s,
// and its m_s x m_s (or A_s x M_s) matrix is stored row-major from out_start[s]. Boxes are
// x1, y1, x2, y2 with inclusive corners (+1 pixel widths), tubelets K boxes oldest first.
// Every float step is an explicitly rounded intrinsic and sums run over the K boxes in order,
// as the NumPy reference (edge_stad.kernels.reference) does, so the matrices, and therefore
// every threshold decision, are that reference's bit for bit.

__device__ __forceinline__ float box_area(const float* b) {
    return __fmul_rn(__fadd_rn(__fsub_rn(b[2], b[0]), 1.f), __fadd_rn(__fsub_rn(b[3], b[1]), 1.f));
}

// max(0, x) that keeps a NaN, as np.maximum does (fmaxf would drop it)
__device__ __forceinline__ float clamp_zero(float x) { return x < 0.f ? 0.f : x; }

// IoU with the arithmetic of the reference's NMS routines: width min(x2) - max(x1) + 1
__device__ __forceinline__ float nms_iou(const float* a, const float* b) {
    const float w = clamp_zero(__fadd_rn(__fsub_rn(fminf(a[2], b[2]), fmaxf(a[0], b[0])), 1.f));
    const float h = clamp_zero(__fadd_rn(__fsub_rn(fminf(a[3], b[3]), fmaxf(a[1], b[1])), 1.f));
    const float inter = __fmul_rn(w, h);
    return __fdiv_rn(inter, __fsub_rn(__fadd_rn(box_area(a), box_area(b)), inter));
}

// IoU as ACT's iou2d: width min(x2 + 1) - max(x1)
__device__ __forceinline__ float act_iou(const float* a, const float* b) {
    const float w = clamp_zero(__fsub_rn(fminf(__fadd_rn(a[2], 1.f), __fadd_rn(b[2], 1.f)), fmaxf(a[0], b[0])));
    const float h = clamp_zero(__fsub_rn(fminf(__fadd_rn(a[3], 1.f), __fadd_rn(b[3], 1.f)), fmaxf(a[1], b[1])));
    const float inter = __fmul_rn(w, h);
    return __fdiv_rn(inter, __fsub_rn(__fadd_rn(box_area(a), box_area(b)), inter));
}

// Tubelet NMS: out[i][j] = sum over k of nms_iou(box k of i, box k of j), per label.
// grid (total rows), block (32 * w); row i of segment seg[i]; threads stride over its columns.
extern "C" __global__ void nms_overlap(const float* __restrict__ boxes, int K, const int* __restrict__ seg,
                                       const int* __restrict__ start, const int* __restrict__ out_start,
                                       float* __restrict__ out) {
    const int i = blockIdx.x;
    const int s = seg[i];
    const int begin = start[s], m = start[s + 1] - begin;
    const float* bi = boxes + (long long)i * 4 * K;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        const float* bj = boxes + (long long)(begin + j) * 4 * K;
        float sum = nms_iou(bi, bj);
        for (int k = 1; k < K; ++k) sum = __fadd_rn(sum, nms_iou(bi + 4 * k, bj + 4 * k));
        out[out_start[s] + (long long)(i - begin) * m + j] = sum;
    }
}

// Tube x candidate matching: out[a][j] = mean IoU over the boxes where candidate j overlaps the
// window of tube a, which was last extended `offset[a]` clips ago: candidate box k faces tube
// box k + o for k < K - o; from o >= K on only candidate box 0 faces the tube's last box.
// tubes (A_total, K, 4): tube a belongs to segment tube_seg[a], whose tubes start at tube_start[s];
// candidates (M_total, K, 4).
// grid (A_total), block (32 * w).
extern "C" __global__ void match_iou(const float* __restrict__ tubes, const int* __restrict__ offset, int K,
                                     const int* __restrict__ tube_seg, const int* __restrict__ tube_start,
                                     const float* __restrict__ candidates,
                                     const int* __restrict__ start, const int* __restrict__ out_start,
                                     float* __restrict__ out) {
    const int a = blockIdx.x;
    const int s = tube_seg[a];
    const int begin = start[s], m = start[s + 1] - begin;
    const int o = offset[a];
    const bool overlapping = o < K;
    const int count = overlapping ? K - o : 1;
    const float* tube = tubes + (long long)a * 4 * K;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        const float* cand = candidates + (long long)(begin + j) * 4 * K;
        float sum = act_iou(cand, tube + 4 * (overlapping ? min(o, K - 1) : K - 1));
        for (int k = 1; k < count; ++k) sum = __fadd_rn(sum, act_iou(cand + 4 * k, tube + 4 * min(k + o, K - 1)));
        out[out_start[s] + (long long)(a - tube_start[s]) * m + j] = __fdiv_rn(sum, (float)count);
    }
}
