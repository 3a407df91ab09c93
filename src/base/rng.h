/* Seeded random streams (STYLE.md section 6): splitmix64 seeds xoshiro256**, one independent stream per
 * (seed, tag, index), so what a loop draws for item i never depends on the order or thread that visits it.
 * Header-only: every function is small and static inline. */
#ifndef SA3D_RNG_H
#define SA3D_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct sa3d_rng { uint64_t s[4]; } sa3d_rng;

static inline uint64_t sa3d_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The stream of item `index` of kind `tag` under `seed`. */
static inline sa3d_rng sa3d_rng_for(uint64_t seed, uint64_t tag, uint64_t index) {
    uint64_t x = seed, h = sa3d_splitmix64(&x) ^ tag;
    h = sa3d_splitmix64(&h) ^ index;
    h = sa3d_splitmix64(&h);
    sa3d_rng r;
    for (int i = 0; i < 4; i++) r.s[i] = sa3d_splitmix64(&h);
    return r;
}

static inline uint64_t sa3d_rng_u64(sa3d_rng *r) {
    uint64_t *s = r->s, t = s[1] << 17;
    uint64_t v = s[1] * 5, out = ((v << 7) | (v >> 57)) * 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return out;
}

/* Uniform on [0, 1) with 53 random bits. */
static inline double sa3d_rng_uniform(sa3d_rng *r) { return (double)(sa3d_rng_u64(r) >> 11) * 0x1.0p-53; }

/* Uniform integer in [lo, hi] (inclusive). */
static inline int sa3d_rng_int(sa3d_rng *r, int lo, int hi) {
    int v = lo + (int)(sa3d_rng_uniform(r) * ((double)hi - lo + 1.0));
    return v > hi ? hi : v;
}

/* Standard normal (Box-Muller, one value per call; the second is discarded to keep streams simple). */
static inline double sa3d_rng_normal(sa3d_rng *r) {
    double u1 = 1.0 - sa3d_rng_uniform(r), u2 = sa3d_rng_uniform(r);   /* u1 in (0, 1] */
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Approximately standard normal from integer arithmetic alone (the sum of four 16-bit uniforms, centred and
 * scaled to unit variance): the same bits on every machine and libm, for generated datasets. */
static inline float sa3d_rng_normal_portable(sa3d_rng *r) {
    uint64_t v = sa3d_rng_u64(r);
    int64_t s = (int64_t)(v & 0xFFFF) + (int64_t)((v >> 16) & 0xFFFF) + (int64_t)((v >> 32) & 0xFFFF) +
                (int64_t)(v >> 48);
    return (float)((double)(s - 131070) / 37837.2277);   /* sqrt(4 (65536^2 - 1) / 12) */
}

/* x[n] = a random unit vector: portable normal components (sa3d_rng_normal_portable), normalised. */
static inline void sa3d_rng_unit_vector(float *x, int n, sa3d_rng *r) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = sa3d_rng_normal_portable(r);
        ss += (double)x[i] * (double)x[i];
    }
    float inv = (float)(1.0 / sqrt(ss > 0.0 ? ss : 1.0));
    for (int i = 0; i < n; i++) x[i] *= inv;
}

#endif
