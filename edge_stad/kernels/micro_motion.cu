// AMMA's micro-motion module (edge_stad.models.micro_motion.MicroMotion) fused into one kernel.
//
// For each pooled pixel of each clip: 3x3/2 max-pool of every frame a pair uses (padding
// ignored, as MaxPool2d pads with -inf), the shallow KxK conv (MM_CHANNELS outputs, zero
// padding, checkpoint weights and bias), then for every pair (a, b) the per-pixel L2 norm
// over the channels written out as sqrt(sum_c (f_a - f_b + eps)^2), stored to the 2x2 block
// a nearest 2x upsample gives it. The per-frame feature maps live only in registers: one
// block pools a tile of each frame into shared memory, convolves it, and keeps every used
// frame's MM_CHANNELS features per pixel until the pairs are done.
//
// Compile-time sizes (the loader passes them as -D options): MM_CHANNELS (8), MM_KSIZE (5).
// Pairs come packed 4 bits per frame index: pair p is (pairs_a >> 4p & 15, pairs_b >> 4p & 15).
#ifndef MM_CHANNELS
#define MM_CHANNELS 8
#endif
#ifndef MM_KSIZE
#define MM_KSIZE 5
#endif
#define MM_TILE 16
#define MM_RADIUS (MM_KSIZE / 2)
#define MM_SPAN (MM_TILE + 2 * MM_RADIUS)
#define MM_MAX_FRAMES 8

// grid (ceil(Wp / 16), ceil(Hp / 16), clips), block (16, 16); Wp, Hp the pooled size
// clip: (clips, 3 * clip_len, H, W) float; out: (clips, num_pairs, H, W) float
extern "C" __global__ void __launch_bounds__(MM_TILE * MM_TILE) micro_motion(
    const float* __restrict__ clip, int clip_len, int height, int width,
    const float* __restrict__ weight, const float* __restrict__ bias,
    int num_pairs, int pairs_a, int pairs_b, float eps, int pool, float* __restrict__ out) {
    __shared__ float w_s[MM_CHANNELS * 3 * MM_KSIZE * MM_KSIZE];
    __shared__ float b_s[MM_CHANNELS];
    __shared__ float tile[3][MM_SPAN][MM_SPAN];

    const int tid = threadIdx.y * MM_TILE + threadIdx.x;
    for (int i = tid; i < MM_CHANNELS * 3 * MM_KSIZE * MM_KSIZE; i += MM_TILE * MM_TILE) w_s[i] = weight[i];
    if (tid < MM_CHANNELS) b_s[tid] = bias[tid];

    const int hp = pool ? (height - 1) / 2 + 1 : height;
    const int wp = pool ? (width - 1) / 2 + 1 : width;
    const int px0 = blockIdx.x * MM_TILE, py0 = blockIdx.y * MM_TILE;
    const int px = px0 + threadIdx.x, py = py0 + threadIdx.y;
    const long long plane = (long long)height * width;
    const float* clip_n = clip + (long long)blockIdx.z * 3 * clip_len * plane;

    unsigned used = 0;
    for (int p = 0; p < num_pairs; ++p) used |= (1u << ((pairs_a >> 4 * p) & 15)) | (1u << ((pairs_b >> 4 * p) & 15));

    float feat[MM_MAX_FRAMES][MM_CHANNELS];
    int slot_of[16];
    int slots = 0;
    for (int f = 0; f < clip_len && f < 16; ++f) {
        if (!(used >> f & 1u)) continue;
        slot_of[f] = slots;
        __syncthreads();  // the previous frame's tile is no longer read
        for (int i = tid; i < 3 * MM_SPAN * MM_SPAN; i += MM_TILE * MM_TILE) {
            const int c = i / (MM_SPAN * MM_SPAN), r = i % (MM_SPAN * MM_SPAN);
            const int ty = py0 - MM_RADIUS + r / MM_SPAN, tx = px0 - MM_RADIUS + r % MM_SPAN;
            float v = 0.f;  // the conv's zero padding
            if (ty >= 0 && ty < hp && tx >= 0 && tx < wp) {
                const float* src = clip_n + (long long)(f * 3 + c) * plane;
                if (pool) {
                    v = __int_as_float(0xff800000);  // -inf
                    for (int iy = max(2 * ty - 1, 0); iy <= min(2 * ty + 1, height - 1); ++iy)
                        for (int ix = max(2 * tx - 1, 0); ix <= min(2 * tx + 1, width - 1); ++ix)
                            v = fmaxf(v, src[(long long)iy * width + ix]);
                } else {
                    v = src[(long long)ty * width + tx];
                }
            }
            tile[c][r / MM_SPAN][r % MM_SPAN] = v;
        }
        __syncthreads();
        float acc[MM_CHANNELS];
#pragma unroll
        for (int o = 0; o < MM_CHANNELS; ++o) acc[o] = b_s[o];
#pragma unroll
        for (int c = 0; c < 3; ++c)
#pragma unroll
            for (int ky = 0; ky < MM_KSIZE; ++ky)
#pragma unroll
                for (int kx = 0; kx < MM_KSIZE; ++kx) {
                    const float v = tile[c][threadIdx.y + ky][threadIdx.x + kx];
#pragma unroll
                    for (int o = 0; o < MM_CHANNELS; ++o)
                        acc[o] += w_s[((o * 3 + c) * MM_KSIZE + ky) * MM_KSIZE + kx] * v;
                }
        if (slots < MM_MAX_FRAMES) {
#pragma unroll
            for (int o = 0; o < MM_CHANNELS; ++o) feat[slots][o] = acc[o];
        }
        ++slots;
    }
    if (px >= wp || py >= hp || slots > MM_MAX_FRAMES) return;

    for (int p = 0; p < num_pairs; ++p) {
        const int a = slot_of[(pairs_a >> 4 * p) & 15], b = slot_of[(pairs_b >> 4 * p) & 15];
        float sum = 0.f;
#pragma unroll
        for (int o = 0; o < MM_CHANNELS; ++o) {
            const float d = feat[a][o] - feat[b][o] + eps;
            sum += d * d;
        }
        const float m = sqrtf(sum);
        float* dst = out + ((long long)blockIdx.z * num_pairs + p) * plane;
        if (pool) {
            for (int dy = 0; dy < 2; ++dy)
                for (int dx = 0; dx < 2; ++dx) {
                    const int y = 2 * py + dy, x = 2 * px + dx;
                    if (y < height && x < width) dst[(long long)y * width + x] = m;
                }
        } else {
            dst[(long long)py * width + px] = m;
        }
    }
}
