/* The INT8 multiply-add ceiling of one x86 core: AVX-512 VNNI VPDPBUSD back to back, no memory traffic.
 *
 * Each instruction multiplies 64 uint8 x int8 pairs and adds them into 16 int32 sums. CHAINS
 * independent accumulators keep the unit busy whatever its latency. Prints "seconds instructions sum";
 * benchmarks/int8_ceiling.py compiles this, runs one copy per core and turns it into MAC/s.
 *
 *     cc -O2 -mavx512f -mavx512bw -mavx512vnni benchmarks/int8_ceiling.c -o int8_ceiling
 *     ./int8_ceiling [iterations]
 */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHAINS 12
/* written out, not a loop over an array: an array of accumulators may live in memory at -O2 */
#define STEP(x, k) x = _mm512_dpbusd_epi32(x, a, b)
#define EACH(f) f(c0, 0); f(c1, 1); f(c2, 2); f(c3, 3); f(c4, 4); f(c5, 5); f(c6, 6); f(c7, 7); f(c8, 8); \
                f(c9, 9); f(c10, 10); f(c11, 11)
#define START(x, k) x = _mm512_set1_epi32(k) /* distinct starts: equal chains would be merged into one */
#define SUM(x, k) total += (unsigned)_mm512_reduce_add_epi32(x)

int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : 100000000L;
    __m512i c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11;
    __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(2);
    struct timespec start, stop;
    unsigned total = 0; /* each lane adds 8 per step: a known answer for the test */
    long i;

    EACH(START);
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (i = 0; i < iterations; i++) {
        EACH(STEP);
        __asm__ volatile("" : "+v"(a)); /* the compiler may not fold the loop */
    }
    clock_gettime(CLOCK_MONOTONIC, &stop);
    EACH(SUM);
    printf("%.9f %ld %u\n", (stop.tv_sec - start.tv_sec) + 1e-9 * (stop.tv_nsec - start.tv_nsec),
           iterations * CHAINS, total);
    return 0;
}
