// Frame preprocessing on the GPU: uint8 BGR frames of any size -> the model's planar input.
//
// One pass per clip: every output pixel of every frame is resized (bilinear, OpenCV's
// INTER_LINEAR sampling: half-pixel centres, edge taps clamped), rounded to the uint8 value
// a resize to uint8 would store, and normalised as (v / 255 - mean) / std, channel-planar,
// frames stacked on channels: out[f * 3 + c][y][x], exactly edge_stad.preprocess.normalize_clip
// of the resized frames. Every float step uses an explicitly rounded intrinsic, so the result
// is the NumPy reference's (edge_stad.kernels.reference.preprocess) bit for bit.
#include "common.cuh"

template <bool HALF>
__device__ __forceinline__ void preprocess_pixel(
    const unsigned char* __restrict__ src, int src_h, int src_w, long long row_stride, long long frame_stride,
    void* __restrict__ dst, int dst_h, int dst_w, float mean0, float mean1, float mean2,
    float std0, float std1, float std2) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int f = blockIdx.z;
    if (x >= dst_w || y >= dst_h) return;

    // source coordinate of the output pixel centre; cv2: (d + 0.5) * scale - 0.5, floor, clamp
    const float scale_x = __fdiv_rn((float)src_w, (float)dst_w);
    const float scale_y = __fdiv_rn((float)src_h, (float)dst_h);
    float sx = __fsub_rn(__fmul_rn(__fadd_rn((float)x, 0.5f), scale_x), 0.5f);
    float sy = __fsub_rn(__fmul_rn(__fadd_rn((float)y, 0.5f), scale_y), 0.5f);
    int x0 = (int)floorf(sx), y0 = (int)floorf(sy);
    float fx = __fsub_rn(sx, (float)x0), fy = __fsub_rn(sy, (float)y0);
    if (x0 < 0) { x0 = 0; fx = 0.f; }
    if (y0 < 0) { y0 = 0; fy = 0.f; }
    if (x0 >= src_w - 1) { x0 = src_w - 1; fx = 0.f; }
    if (y0 >= src_h - 1) { y0 = src_h - 1; fy = 0.f; }
    const int x1 = min(x0 + 1, src_w - 1), y1 = min(y0 + 1, src_h - 1);

    const unsigned char* frame = src + f * frame_stride;
    const unsigned char* r0 = frame + y0 * row_stride;
    const unsigned char* r1 = frame + y1 * row_stride;
    const float means[3] = {mean0, mean1, mean2};
    const float stds[3] = {std0, std1, std2};
    const long long plane = (long long)dst_h * dst_w;
#pragma unroll
    for (int c = 0; c < 3; ++c) {
        const float p00 = r0[x0 * 3 + c], p01 = r0[x1 * 3 + c];
        const float p10 = r1[x0 * 3 + c], p11 = r1[x1 * 3 + c];
        const float top = __fadd_rn(p00, __fmul_rn(fx, __fsub_rn(p01, p00)));
        const float bottom = __fadd_rn(p10, __fmul_rn(fx, __fsub_rn(p11, p10)));
        const float v = rintf(__fadd_rn(top, __fmul_rn(fy, __fsub_rn(bottom, top))));
        const float out = __fdiv_rn(__fsub_rn(__fdiv_rn(v, 255.f), means[c]), stds[c]);
        const long long at = (long long)(f * 3 + c) * plane + (long long)y * dst_w + x;
        if (HALF) {
            static_cast<unsigned short*>(dst)[at] = float_to_half_bits(out);
        } else {
            static_cast<float*>(dst)[at] = out;
        }
    }
}

// grid (ceil(dst_w / bx), ceil(dst_h / by), frames); row_stride and frame_stride in bytes
extern "C" __global__ void preprocess_f32(
    const unsigned char* __restrict__ src, int src_h, int src_w, long long row_stride, long long frame_stride,
    float* __restrict__ dst, int dst_h, int dst_w, float mean0, float mean1, float mean2, float std0, float std1, float std2) {
    preprocess_pixel<false>(src, src_h, src_w, row_stride, frame_stride, dst, dst_h, dst_w, mean0, mean1, mean2, std0, std1,
                            std2);
}

extern "C" __global__ void preprocess_f16(
    const unsigned char* __restrict__ src, int src_h, int src_w, long long row_stride, long long frame_stride,
    unsigned short* __restrict__ dst, int dst_h, int dst_w, float mean0, float mean1, float mean2, float std0, float std1, float std2) {
    preprocess_pixel<true>(src, src_h, src_w, row_stride, frame_stride, dst, dst_h, dst_w, mean0, mean1, mean2, std0, std1,
                           std2);
}
