/* A small seeded random number generator: PCG32 (O'Neill 2014, pcg-random.org, "pcg32_random_r"), seeded
 * through SplitMix64 so that nearby seeds give unrelated streams. Deterministic across platforms: every
 * shuffle, split, initialization and dropout mask in cnn.c draws from one of these. */
#ifndef CNN_CORE_RNG_H
#define CNN_CORE_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct cnn_rng {
    uint64_t state;
    uint64_t inc;
} cnn_rng;

static inline uint64_t cnn_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint32_t cnn_rng_u32(cnn_rng *r)
{
    uint64_t old = r->state;
    r->state = old * 6364136223846793005ull + r->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

static inline void cnn_rng_seed(cnn_rng *r, uint64_t seed)
{
    uint64_t s = seed;
    r->state = 0;
    r->inc = (cnn_splitmix64(&s) << 1u) | 1u;
    cnn_rng_u32(r);
    r->state += cnn_splitmix64(&s);
    cnn_rng_u32(r);
}

/* Uniform in [0, 1) with 24 bits. */
static inline float cnn_rng_uniform(cnn_rng *r) { return (float)(cnn_rng_u32(r) >> 8) * (1.0f / 16777216.0f); }

/* Uniform integer in [0, n), unbiased (Lemire 2019, rejection on the low product). */
static inline uint32_t cnn_rng_below(cnn_rng *r, uint32_t n)
{
    uint64_t m = (uint64_t)cnn_rng_u32(r) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (low < t) {
            m = (uint64_t)cnn_rng_u32(r) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

/* Standard normal by Box-Muller. */
static inline float cnn_rng_normal(cnn_rng *r)
{
    float u1 = cnn_rng_uniform(r), u2 = cnn_rng_uniform(r);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
}

/* Fisher-Yates shuffle of an index array. */
static inline void cnn_rng_shuffle(cnn_rng *r, int64_t *idx, int64_t n)
{
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)cnn_rng_below(r, (uint32_t)(i + 1));
        int64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

#endif
