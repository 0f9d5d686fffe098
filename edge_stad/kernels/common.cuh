// Shared helpers of the edge_stad kernels (included by NVRTC and nvcc alike; no system headers,
// so that NVRTC on a target without a CUDA toolkit compiles them).
#pragma once

// Round-to-nearest float -> IEEE half bits, without cuda_fp16.h.
__device__ __forceinline__ unsigned short float_to_half_bits(float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}
