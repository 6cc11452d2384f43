/* athena_decode.c: see athena_decode.h. Build with -std=c99 -ffp-contract=off. */
#include "athena_decode.h"

#include <float.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "athena_decode needs float arithmetic evaluated in binary32 (FLT_EVAL_METHOD == 0): use SSE2 (-msse2 -mfpmath=sse) or a 64-bit target"
#endif

/* ---- small helpers ---------------------------------------------------------------------- */

static athena_status fail(athena_error *err, athena_status s, const char *what, uint64_t a,
                          uint64_t b, uint64_t c) {
    if (err) {
        err->status = s;
        err->what = what;
        err->a = a;
        err->b = b;
        err->c = c;
    }
    return s;
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint16_t le_u16(const uint8_t *p, size_t i) {
    return (uint16_t)(p[2 * i] | ((uint16_t)p[2 * i + 1] << 8));
}

static int f16_is_finite(uint16_t bits) { return (bits & 0x7c00u) != 0x7c00u; }

float athena_f16_to_f32(uint16_t bits) {
    uint32_t sign = ((uint32_t)bits & 0x8000u) << 16;
    uint32_t exp = ((uint32_t)bits >> 10) & 0x1fu;
    uint32_t mant = (uint32_t)bits & 0x3ffu;
    uint32_t out;
    if (exp != 0 && exp != 0x1f) {
        out = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
    } else if (exp == 0) {
        if (mant == 0) {
            out = sign;
        } else {
            /* Subnormal mant * 2^-24: shift the leading one up to bit 10. */
            uint32_t shift = 0;
            while ((mant & 0x400u) == 0) {
                mant <<= 1;
                shift++;
            }
            out = sign | ((127 - 14 - shift) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (mant == 0) {
        out = sign | 0x7f800000u;
    } else {
        out = sign | 0x7fc00000u | (mant << 13);
    }
    return f32_from_bits(out);
}

/* a * b into *out; 0 on overflow. */
static int mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

static int fits_size(uint64_t v) { return v <= (uint64_t)SIZE_MAX; }

/* G = ceil(M / d): vector groups per row, the last one partial when d does not divide M
 * (version 4). Written without M + d - 1, which could wrap for M near 2^64. */
static uint64_t group_count(const athena_params *p) {
    return p->cols / p->vector_dim + (p->cols % p->vector_dim != 0);
}

uint32_t athena_index_bits(const athena_params *p) {
    uint32_t b = 0;
    while (b < 32 && ((p->centroids >> b) & 1u) == 0) b++;
    return b;
}

/* ---- validation ------------------------------------------------------------------------- */

#define OVERFLOW(what) return fail(err, ATHENA_E_OVERFLOW, what, 0, 0, 0)
#define MUL(a, b, out, what) \
    do {                     \
        if (!mul_u64((a), (b), (out))) OVERFLOW(what); \
    } while (0)

athena_status athena_params_validate(const athena_params *p, athena_sizes *sizes,
                                     athena_error *err) {
    athena_sizes s;
    uint64_t d = p->vector_dim, v, t, groups, bits, ebytes;
    if (p->rows == 0) return fail(err, ATHENA_E_INVALID_PARAM, "rows", p->rows, 0, 0);
    if (p->vector_dim < 1 || p->vector_dim > 8)
        return fail(err, ATHENA_E_INVALID_PARAM, "vector_dim", d, 0, 0);
    if (p->cols < d)
        return fail(err, ATHENA_E_INVALID_PARAM, "cols", p->cols, 0, 0);
    if (p->centroids < 2 || p->centroids > 65536 || (p->centroids & (p->centroids - 1)) != 0)
        return fail(err, ATHENA_E_INVALID_PARAM, "centroids", p->centroids, 0, 0);
    if (p->tile_rows == 0 || p->tile_rows > p->rows)
        return fail(err, ATHENA_E_INVALID_PARAM, "tile_rows", p->tile_rows, 0, 0);
    if (p->tile_cols < d || p->tile_cols > p->cols || (p->tile_cols % d != 0 && p->tile_cols != p->cols))
        return fail(err, ATHENA_E_INVALID_PARAM, "tile_cols", p->tile_cols, 0, 0);
    if ((uint64_t)p->rank > (p->rows < p->cols ? p->rows : p->cols))
        return fail(err, ATHENA_E_INVALID_PARAM, "rank", p->rank, 0, 0);
    /* 0x55555555: the even bits, so a power of two there is a power of four. */
    if (p->rotation != 0 &&
        (p->rotation < 4 || p->rotation > 4096 || (p->rotation & (p->rotation - 1)) != 0 ||
         (p->rotation & 0x55555555u) == 0 || p->cols % p->rotation != 0))
        return fail(err, ATHENA_E_INVALID_PARAM, "rotation", p->rotation, 0, 0);
    if (p->codebook != ATHENA_CB_I8 && p->codebook != ATHENA_CB_F16)
        return fail(err, ATHENA_E_INVALID_PARAM, "codebook", (uint64_t)p->codebook, 0, 0);

    /* Same computations, same order and same names as the Rust Params::validate. */
    MUL(p->rows, p->cols, &v, "rows * cols");
    {
        uint64_t ob;
        MUL(v, 4, &ob, "output bytes");
    }
    if (!fits_size(v)) OVERFLOW("rows * cols");
    s.output_len = (size_t)v;

    groups = group_count(p);
    bits = athena_index_bits(p);
    MUL(groups, bits, &v, "index bits per row");
    s.row_stride = v / 8 + (v % 8 != 0);
    MUL(s.row_stride, p->rows, &v, "indices bytes");
    if (!fits_size(v)) OVERFLOW("indices bytes");
    s.indices_len = (size_t)v;

    s.tiles_r = p->rows / p->tile_rows + (p->rows % p->tile_rows != 0);
    s.tiles_c = p->cols / p->tile_cols + (p->cols % p->tile_cols != 0);
    MUL(s.tiles_r, s.tiles_c, &t, "number of codebooks");
    s.codebooks = t;
    ebytes = p->codebook == ATHENA_CB_I8 ? 1 : 2;
    MUL(t, p->centroids, &v, "codebook bytes");
    MUL(v, d, &v, "codebook bytes");
    MUL(v, ebytes, &v, "codebook bytes");
    if (!fits_size(v)) OVERFLOW("codebook bytes");
    s.codebook_len = (size_t)v;

    if (p->codebook == ATHENA_CB_I8) {
        MUL(t, d, &v, "scales bytes");
        MUL(v, 4, &v, "scales bytes");
        if (!fits_size(v)) OVERFLOW("scales bytes");
        s.scales_len = (size_t)v;
    } else {
        s.scales_len = 0;
    }

    MUL(p->rows, p->rank, &v, "lowrank_a bytes");
    MUL(v, 2, &v, "lowrank_a bytes");
    if (!fits_size(v)) OVERFLOW("lowrank_a bytes");
    s.lowrank_a_len = (size_t)v;
    MUL(p->cols, p->rank, &v, "lowrank_b bytes");
    MUL(v, 2, &v, "lowrank_b bytes");
    if (!fits_size(v)) OVERFLOW("lowrank_b bytes");
    s.lowrank_b_len = (size_t)v;

    v = p->rotation == 0 ? 0 : p->cols / 8 + (p->cols % 8 != 0);
    if (!fits_size(v)) OVERFLOW("signs bytes");
    s.signs_len = (size_t)v;

    if (p->row_scales) {
        MUL(p->rows, 2, &v, "row scales bytes");
    } else {
        v = 0;
    }
    if (!fits_size(v)) OVERFLOW("row scales bytes");
    s.row_scales_len = (size_t)v;

    if (sizes) *sizes = s;
    return ATHENA_OK;
}

static athena_status expect_len(athena_error *err, const char *component, size_t expected,
                                size_t actual) {
    if (expected != actual)
        return fail(err, ATHENA_E_LENGTH_MISMATCH, component, expected, actual, 0);
    return ATHENA_OK;
}

athena_status athena_encoded_init(athena_encoded *e, const athena_params *p,
                                  const uint8_t *indices, size_t indices_len,
                                  const uint8_t *codebook, size_t codebook_len,
                                  const uint8_t *scales, size_t scales_len,
                                  const uint8_t *lowrank_a, size_t lowrank_a_len,
                                  const uint8_t *lowrank_b, size_t lowrank_b_len,
                                  const uint8_t *signs, size_t signs_len,
                                  const uint8_t *row_scales, size_t row_scales_len,
                                  athena_error *err) {
    athena_sizes s;
    athena_status st = athena_params_validate(p, &s, err);
    if (st != ATHENA_OK) return st;
    /* A NULL buffer is only acceptable as an empty one. */
    if (!indices) indices_len = 0;
    if (!codebook) codebook_len = 0;
    if (!scales) scales_len = 0;
    if (!lowrank_a) lowrank_a_len = 0;
    if (!lowrank_b) lowrank_b_len = 0;
    if (!signs) signs_len = 0;
    if (!row_scales) row_scales_len = 0;
    if ((st = expect_len(err, "indices", s.indices_len, indices_len)) != ATHENA_OK) return st;
    if ((st = expect_len(err, "codebook", s.codebook_len, codebook_len)) != ATHENA_OK) return st;
    if ((st = expect_len(err, "scales", s.scales_len, scales_len)) != ATHENA_OK) return st;
    if ((st = expect_len(err, "lowrank_a", s.lowrank_a_len, lowrank_a_len)) != ATHENA_OK)
        return st;
    if ((st = expect_len(err, "lowrank_b", s.lowrank_b_len, lowrank_b_len)) != ATHENA_OK)
        return st;
    if ((st = expect_len(err, "signs", s.signs_len, signs_len)) != ATHENA_OK) return st;
    if ((st = expect_len(err, "row_scales", s.row_scales_len, row_scales_len)) != ATHENA_OK)
        return st;
    e->params = *p;
    e->sizes = s;
    e->indices = indices;
    e->codebook = codebook;
    e->scales = scales;
    e->lowrank_a = lowrank_a;
    e->lowrank_b = lowrank_b;
    e->signs = signs;
    e->row_scales = row_scales;
    return ATHENA_OK;
}

/* ---- index stream ----------------------------------------------------------------------- */

/* LSB-first reader of consecutive `bits`-wide fields from one row of `len` bytes. */
typedef struct {
    const uint8_t *bytes;
    size_t len, pos;
    uint64_t acc;
    uint32_t have, bits;
    uint64_t mask;
} bit_reader;

static void reader_init(bit_reader *r, const uint8_t *bytes, size_t len, uint32_t bits) {
    r->bytes = bytes;
    r->len = len;
    r->pos = 0;
    r->acc = 0;
    r->have = 0;
    r->bits = bits;
    r->mask = ((uint64_t)1 << bits) - 1;
}

static uint32_t reader_next(bit_reader *r) {
    uint32_t v;
    if (r->have < r->bits) {
        while (r->have <= 56) {
            if (r->pos < r->len) {
                r->acc |= (uint64_t)r->bytes[r->pos++] << r->have;
                r->have += 8;
            } else {
                r->have = 64; /* past the row: zero bits (never reached for G fields) */
                break;
            }
        }
    }
    v = (uint32_t)(r->acc & r->mask);
    r->acc >>= r->bits;
    r->have -= r->bits;
    return v;
}

athena_status athena_index(const athena_encoded *e, uint64_t row, uint64_t group,
                           uint32_t *out, athena_error *err) {
    uint64_t groups = group_count(&e->params);
    uint32_t bits = athena_index_bits(&e->params), q, v = 0;
    const uint8_t *bytes;
    size_t start;
    if (row >= e->params.rows)
        return fail(err, ATHENA_E_ROW_OUT_OF_RANGE, NULL, row, e->params.rows, 0);
    if (group >= groups) return fail(err, ATHENA_E_GROUP_OUT_OF_RANGE, NULL, group, groups, 0);
    bytes = e->indices + (size_t)row * (size_t)e->sizes.row_stride;
    start = (size_t)group * bits;
    for (q = 0; q < bits; q++) {
        size_t p = start + q;
        v |= (uint32_t)((bytes[p / 8] >> (p % 8)) & 1u) << q;
    }
    *out = v;
    return ATHENA_OK;
}

/* ---- check ------------------------------------------------------------------------------ */

athena_status athena_check(const athena_encoded *e, athena_error *err) {
    const athena_params *p = &e->params;
    size_t rows = (size_t)p->rows, stride = (size_t)e->sizes.row_stride;
    size_t d = p->vector_dim, n = p->centroids, groups = (size_t)group_count(p);
    size_t rank = p->rank, cols = (size_t)p->cols, row, g, i;
    uint32_t bits = athena_index_bits(p);
    unsigned used = (unsigned)((groups * bits) % 8);
    for (row = 0; row < rows; row++) {
        const uint8_t *bytes = e->indices + row * stride;
        bit_reader r;
        reader_init(&r, bytes, stride, bits);
        for (g = 0; g < groups; g++) {
            uint32_t ix = reader_next(&r);
            if (ix >= n) return fail(err, ATHENA_E_INDEX_OUT_OF_RANGE, NULL, row, g, ix);
        }
        if (used != 0 && (bytes[stride - 1] >> used) != 0)
            return fail(err, ATHENA_E_NONZERO_PADDING, NULL, row, 0, 0);
    }
    if (p->codebook == ATHENA_CB_F16) {
        size_t count = e->sizes.codebook_len / 2, per_cb = n * d;
        for (i = 0; i < count; i++)
            if (!f16_is_finite(le_u16(e->codebook, i)))
                return fail(err, ATHENA_E_NON_FINITE_CODEBOOK, NULL, i / per_cb,
                            (i % per_cb) / d, i % d);
    }
    for (i = 0; i < e->sizes.scales_len / 2; i++)
        if (!f16_is_finite(le_u16(e->scales, i)))
            return fail(err, ATHENA_E_NON_FINITE_SCALE, i % 2 == 0 ? "offset" : "step",
                        (i / 2) / d, (i / 2) % d, 0);
    for (i = 0; i < e->sizes.lowrank_a_len / 2; i++)
        if (!f16_is_finite(le_u16(e->lowrank_a, i)))
            return fail(err, ATHENA_E_NON_FINITE_LOWRANK, "lowrank_a", i / rank, i % rank, 0);
    for (i = 0; i < e->sizes.lowrank_b_len / 2; i++)
        if (!f16_is_finite(le_u16(e->lowrank_b, i)))
            return fail(err, ATHENA_E_NON_FINITE_LOWRANK, "lowrank_b", i / cols, i % cols, 0);
    for (i = 0; i < e->sizes.row_scales_len / 2; i++)
        if (!f16_is_finite(le_u16(e->row_scales, i)))
            return fail(err, ATHENA_E_NON_FINITE_ROW_SCALE, NULL, i, 0, 0);
    if (e->sizes.signs_len > 0 && cols % 8 != 0 &&
        (e->signs[e->sizes.signs_len - 1] >> (cols % 8)) != 0)
        return fail(err, ATHENA_E_NONZERO_SIGN_PADDING, NULL, 0, 0, 0);
    return ATHENA_OK;
}

/* ---- decode ----------------------------------------------------------------------------- */

/* 1/sqrt(B) for B = 4^k: 2^-k, exact. */
static float rotation_scale(size_t block) {
    unsigned k = 0;
    while (((size_t)1 << (2 * k)) < block) k++;
    return 1.0f / (float)(1u << k);
}

/* The butterfly stages h = 1, 2, ..., B/2 of step 5 on every block of B = block floats of x
 * (len a multiple of block), in place, without the scale. */
static void butterflies(float *x, size_t len, size_t block) {
    size_t b0, h, start, a;
    for (b0 = 0; b0 < len; b0 += block) {
        float *c = x + b0;
        for (h = 1; h < block; h *= 2)
            for (start = 0; start < block; start += 2 * h)
                for (a = start; a < start + h; a++) {
                    float u = c[a], w = c[a + h];
                    c[a] = u + w;
                    c[a + h] = u - w;
                }
    }
}

static int sign_bit(const uint8_t *signs, size_t j) { return (signs[j / 8] >> (j % 8)) & 1u; }

/* Step 5 on one decoded row of len floats (a multiple of block = B): per block the butterfly
 * stages h = 1, 2, ..., B/2, then times 1/sqrt(B) (a power of two, exact), then the signs. */
static void rotate_row(float *x, size_t len, size_t block, const uint8_t *signs) {
    float scale = rotation_scale(block);
    size_t j;
    butterflies(x, len, block);
    for (j = 0; j < len; j++) {
        float y = x[j] * scale;
        x[j] = sign_bit(signs, j) ? -y : y;
    }
}

/* row < rows, out has cols floats. */
static void decode_row_inner(const athena_encoded *e, size_t row, float *out) {
    const athena_params *p = &e->params;
    size_t d = p->vector_dim, n = p->centroids, cols = (size_t)p->cols;
    size_t tile_cols = (size_t)p->tile_cols, tiles_c = (size_t)e->sizes.tiles_c;
    size_t stride = (size_t)e->sizes.row_stride, r = p->rank;
    size_t tr = row / (size_t)p->tile_rows, tc, j, k;
    bit_reader rd;
    reader_init(&rd, e->indices + row * stride, stride, athena_index_bits(p));

    for (tc = 0; tc < tiles_c; tc++) {
        size_t t = tr * tiles_c + tc;
        size_t c0 = tc * tile_cols;
        size_t c1 = c0 + tile_cols < cols ? c0 + tile_cols : cols;
        if (p->codebook == ATHENA_CB_I8) {
            const uint8_t *cb = e->codebook + t * n * d;
            float off[8], step[8];
            size_t ee;
            for (ee = 0; ee < d; ee++) {
                off[ee] = athena_f16_to_f32(le_u16(e->scales, (t * d + ee) * 2));
                step[ee] = athena_f16_to_f32(le_u16(e->scales, (t * d + ee) * 2 + 1));
            }
            for (j = c0; j < c1; j += d) {
                const uint8_t *entry = cb + (size_t)reader_next(&rd) * d;
                /* A partial last group (version 4) uses the first c1 - j dimensions. */
                for (ee = 0; ee < d && j + ee < c1; ee++) {
                    /* v = off + step * u: two roundings (needs -ffp-contract=off). */
                    float prod = step[ee] * (float)entry[ee];
                    out[j + ee] = off[ee] + prod;
                }
            }
        } else {
            const uint8_t *cb = e->codebook + t * n * d * 2;
            size_t ee;
            for (j = c0; j < c1; j += d) {
                size_t base = (size_t)reader_next(&rd) * d;
                for (ee = 0; ee < d && j + ee < c1; ee++)
                    out[j + ee] = athena_f16_to_f32(le_u16(cb, base + ee));
            }
        }
    }

    if (p->row_scales) {
        /* Step 3, row scale: v = v * s, rounded (not exact: needs -ffp-contract=off so that it
         * is not fused with the low-rank addition below). */
        float s = athena_f16_to_f32(le_u16(e->row_scales, row));
        for (j = 0; j < cols; j++) out[j] = out[j] * s;
    }

    if (r > 0) {
        /* w = v + acc, acc = ((0 + A[i,0] B[0,j]) + A[i,1] B[1,j]) + ... in binary32. */
        enum { CHUNK = 64 };
        float acc[CHUNK];
        size_t j0;
        for (j0 = 0; j0 < cols; j0 += CHUNK) {
            size_t w = cols - j0 < CHUNK ? cols - j0 : CHUNK, jj;
            for (jj = 0; jj < w; jj++) acc[jj] = 0.0f;
            for (k = 0; k < r; k++) {
                float a = athena_f16_to_f32(le_u16(e->lowrank_a, row * r + k));
                size_t base = k * cols + j0;
                for (jj = 0; jj < w; jj++) {
                    float prod = a * athena_f16_to_f32(le_u16(e->lowrank_b, base + jj));
                    acc[jj] = acc[jj] + prod;
                }
            }
            for (jj = 0; jj < w; jj++) out[j0 + jj] = out[j0 + jj] + acc[jj];
        }
    }
    if (p->rotation > 0) rotate_row(out, cols, p->rotation, e->signs);
}

athena_status athena_decode_row(const athena_encoded *e, uint64_t row, float *out,
                                size_t out_len, athena_error *err) {
    if (row >= e->params.rows)
        return fail(err, ATHENA_E_ROW_OUT_OF_RANGE, NULL, row, e->params.rows, 0);
    if (out_len != (size_t)e->params.cols || !out)
        return fail(err, ATHENA_E_LENGTH_MISMATCH, "output", e->params.cols, out ? out_len : 0,
                    0);
    decode_row_inner(e, (size_t)row, out);
    return ATHENA_OK;
}

athena_status athena_decode(const athena_encoded *e, float *out, size_t out_len,
                            athena_error *err) {
    size_t row, cols = (size_t)e->params.cols;
    if (out_len != e->sizes.output_len || !out)
        return fail(err, ATHENA_E_LENGTH_MISMATCH, "output", e->sizes.output_len,
                    out ? out_len : 0, 0);
    for (row = 0; row < (size_t)e->params.rows; row++) decode_row_inner(e, row, out + row * cols);
    return ATHENA_OK;
}

/* ---- fused matrix-vector product (spec section 10) -------------------------------------- */

/* Checked a + b into *out; 0 on overflow. */
static int add_size(size_t a, size_t b, size_t *out) {
    if (a > SIZE_MAX - b) return 0;
    *out = a + b;
    return 1;
}

size_t athena_matvec_scratch_len(const athena_params *p) {
    athena_sizes s;
    size_t cols, len;
    if (athena_params_validate(p, &s, NULL) != ATHENA_OK) return 0;
    cols = (size_t)p->cols; /* <= rows * cols, which fits size_t */
    if (!add_size(cols, p->rank, &len)) return 0;
    if (p->codebook == ATHENA_CB_I8 &&
        (!fits_size(s.tiles_c) || !add_size(len, cols, &len) ||
         !add_size(len, (size_t)s.tiles_c, &len)))
        return 0;
    if (len > SIZE_MAX / sizeof(float)) return 0;
    return len;
}

athena_status athena_matvec(const athena_encoded *e, const float *x, size_t x_len, float *y,
                            size_t y_len, float *scratch, size_t scratch_len,
                            athena_error *err) {
    const athena_params *p = &e->params;
    size_t rows = (size_t)p->rows, cols = (size_t)p->cols, d = p->vector_dim;
    size_t n = p->centroids, r = p->rank, stride = (size_t)e->sizes.row_stride;
    size_t tile_rows = (size_t)p->tile_rows, tile_cols = (size_t)p->tile_cols;
    size_t tiles_c = (size_t)e->sizes.tiles_c, need = athena_matvec_scratch_len(p);
    uint32_t bits = athena_index_bits(p);
    float *xr, *xs, *offsum, *z;
    size_t i, j, k, tc;

    if (!x || x_len != cols)
        return fail(err, ATHENA_E_LENGTH_MISMATCH, "input", cols, x ? x_len : 0, 0);
    if (!y || y_len != rows)
        return fail(err, ATHENA_E_LENGTH_MISMATCH, "output", rows, y ? y_len : 0, 0);
    if (!scratch || scratch_len < need)
        return fail(err, ATHENA_E_LENGTH_MISMATCH, "scratch", need, scratch ? scratch_len : 0,
                    0);
    /* Scratch layout: x' [M], z [r], then for i8 codebooks xs [M] and offsum [TC]. */
    xr = scratch;
    z = xr + cols;
    xs = z + r;
    offsum = xs + cols;

    /* (a) x' = Q^T x: signs, butterfly stages, 1/sqrt(B); x' = x without a rotation. */
    if (p->rotation > 0) {
        float scale = rotation_scale(p->rotation);
        for (j = 0; j < cols; j++) xr[j] = sign_bit(e->signs, j) ? -x[j] : x[j];
        butterflies(xr, cols, p->rotation);
        for (j = 0; j < cols; j++) xr[j] = xr[j] * scale;
    } else {
        for (j = 0; j < cols; j++) xr[j] = x[j];
    }

    /* (b) z = B x': z_k = ((+0 + B[k,0] x'_0) + B[k,1] x'_1) + ..., columns ascending. */
    for (k = 0; k < r; k++) {
        float acc = 0.0f;
        for (j = 0; j < cols; j++) {
            float prod = athena_f16_to_f32(le_u16(e->lowrank_b, k * cols + j)) * xr[j];
            acc = acc + prod;
        }
        z[k] = acc;
    }

    for (i = 0; i < rows; i++) {
        size_t tr = i / tile_rows;
        float c = 0.0f;
        bit_reader rd;
        reader_init(&rd, e->indices + i * stride, stride, bits);

        /* (c) i8 codebooks: at the first row of each row of tiles, per column
         * xs_j = step_{t,e(j)} * x'_j and per tile offsum_t = sum of off_{t,e(j)} * x'_j over
         * the tile's columns, ascending from +0 (shared by the tile's rows). */
        if (p->codebook == ATHENA_CB_I8 && i % tile_rows == 0) {
            for (tc = 0; tc < tiles_c; tc++) {
                size_t t = tr * tiles_c + tc, c0 = tc * tile_cols;
                size_t c1 = c0 + tile_cols < cols ? c0 + tile_cols : cols;
                float acc = 0.0f;
                for (j = c0; j < c1; j++) {
                    size_t ee = j % d; /* dimension e of column j */
                    float off = athena_f16_to_f32(le_u16(e->scales, (t * d + ee) * 2));
                    float step = athena_f16_to_f32(le_u16(e->scales, (t * d + ee) * 2 + 1));
                    float prod = off * xr[j];
                    acc = acc + prod;
                    xs[j] = step * xr[j];
                }
                offsum[tc] = acc;
            }
        }

        /* (d) c = the row's codebook values times x', one accumulator from +0: per tile (in
         * column order) first the tile's offset sum (i8), then the columns ascending. */
        for (tc = 0; tc < tiles_c; tc++) {
            size_t t = tr * tiles_c + tc, c0 = tc * tile_cols;
            size_t c1 = c0 + tile_cols < cols ? c0 + tile_cols : cols, ee;
            if (p->codebook == ATHENA_CB_I8) {
                const uint8_t *cb = e->codebook + t * n * d;
                c = c + offsum[tc];
                for (j = c0; j < c1; j += d) {
                    const uint8_t *entry = cb + (size_t)reader_next(&rd) * d;
                    /* A partial last group (version 4) uses the first c1 - j dimensions. */
                    for (ee = 0; ee < d && j + ee < c1; ee++) {
                        float prod = xs[j + ee] * (float)entry[ee];
                        c = c + prod;
                    }
                }
            } else {
                const uint8_t *cb = e->codebook + t * n * d * 2;
                for (j = c0; j < c1; j += d) {
                    size_t base = (size_t)reader_next(&rd) * d;
                    for (ee = 0; ee < d && j + ee < c1; ee++) {
                        float prod = athena_f16_to_f32(le_u16(cb, base + ee)) * xr[j + ee];
                        c = c + prod;
                    }
                }
            }
        }

        /* (e) Row scale on the row's sum: c = c * s_i (rounded; -ffp-contract=off). */
        if (p->row_scales) c = c * athena_f16_to_f32(le_u16(e->row_scales, i));

        /* (f) Low-rank: y_i = c + ((+0 + A[i,0] z_0) + A[i,1] z_1) + ...; y_i = c if r = 0. */
        if (r > 0) {
            float acc = 0.0f;
            for (k = 0; k < r; k++) {
                float prod = athena_f16_to_f32(le_u16(e->lowrank_a, i * r + k)) * z[k];
                acc = acc + prod;
            }
            y[i] = c + acc;
        } else {
            y[i] = c;
        }
    }
    return ATHENA_OK;
}

/* ---- messages --------------------------------------------------------------------------- */

const char *athena_status_name(athena_status s) {
    switch (s) {
    case ATHENA_OK: return "ok";
    case ATHENA_E_INVALID_PARAM: return "invalid_param";
    case ATHENA_E_OVERFLOW: return "overflow";
    case ATHENA_E_LENGTH_MISMATCH: return "length_mismatch";
    case ATHENA_E_ROW_OUT_OF_RANGE: return "row_out_of_range";
    case ATHENA_E_GROUP_OUT_OF_RANGE: return "group_out_of_range";
    case ATHENA_E_INDEX_OUT_OF_RANGE: return "index_out_of_range";
    case ATHENA_E_NONZERO_PADDING: return "nonzero_padding";
    case ATHENA_E_NON_FINITE_CODEBOOK: return "non_finite_codebook";
    case ATHENA_E_NON_FINITE_SCALE: return "non_finite_scale";
    case ATHENA_E_NON_FINITE_LOWRANK: return "non_finite_lowrank";
    case ATHENA_E_NONZERO_SIGN_PADDING: return "nonzero_sign_padding";
    case ATHENA_E_NON_FINITE_ROW_SCALE: return "non_finite_row_scale";
    }
    return "unknown";
}

static const char *constraint(const char *param) {
    static const char *const table[][2] = {
        {"rows", "must be >= 1"},
        {"cols", "must be >= vector_dim"},
        {"vector_dim", "must be in 1..=8"},
        {"centroids", "must be a power of two in 2..=65536"},
        {"tile_rows", "must be in 1..=rows"},
        {"tile_cols", "must be in vector_dim..=cols, a multiple of vector_dim or cols"},
        {"rank", "must be <= min(rows, cols)"},
        {"rotation", "must be 0 or a power of four in 4..=4096 that divides cols"},
        {"codebook", "must be i8 or f16"},
    };
    size_t i;
    for (i = 0; i < sizeof table / sizeof table[0]; i++)
        if (param && strcmp(param, table[i][0]) == 0) return table[i][1];
    return "invalid";
}

int athena_error_message(const athena_error *e, char *buf, size_t len) {
    const char *what = e->what ? e->what : "?";
    switch (e->status) {
    case ATHENA_OK: return snprintf(buf, len, "ok");
    case ATHENA_E_INVALID_PARAM:
        return snprintf(buf, len, "invalid %s = %" PRIu64 ": %s", what, e->a, constraint(what));
    case ATHENA_E_OVERFLOW: return snprintf(buf, len, "size overflow computing %s", what);
    case ATHENA_E_LENGTH_MISMATCH:
        return snprintf(buf, len, "%s has length %" PRIu64 ", expected %" PRIu64, what, e->b,
                        e->a);
    case ATHENA_E_ROW_OUT_OF_RANGE:
        return snprintf(buf, len, "row %" PRIu64 " out of range (rows = %" PRIu64 ")", e->a,
                        e->b);
    case ATHENA_E_GROUP_OUT_OF_RANGE:
        return snprintf(buf, len, "group %" PRIu64 " out of range (groups = %" PRIu64 ")", e->a,
                        e->b);
    case ATHENA_E_INDEX_OUT_OF_RANGE:
        return snprintf(buf, len,
                        "index %" PRIu64 " at row %" PRIu64 ", group %" PRIu64 " is >= centroids",
                        e->c, e->a, e->b);
    case ATHENA_E_NONZERO_PADDING:
        return snprintf(buf, len, "non-zero padding bits at the end of index row %" PRIu64, e->a);
    case ATHENA_E_NON_FINITE_CODEBOOK:
        return snprintf(buf, len,
                        "non-finite value in codebook %" PRIu64 ", entry %" PRIu64
                        ", dimension %" PRIu64,
                        e->a, e->b, e->c);
    case ATHENA_E_NON_FINITE_SCALE:
        return snprintf(buf, len, "non-finite %s in codebook %" PRIu64 ", dimension %" PRIu64,
                        what, e->a, e->b);
    case ATHENA_E_NON_FINITE_LOWRANK:
        return snprintf(buf, len,
                        "non-finite value in %s at row %" PRIu64 ", column %" PRIu64, what, e->a,
                        e->b);
    case ATHENA_E_NONZERO_SIGN_PADDING:
        return snprintf(buf, len, "non-zero padding bits at the end of the rotation signs");
    case ATHENA_E_NON_FINITE_ROW_SCALE:
        return snprintf(buf, len, "non-finite row scale at row %" PRIu64, e->a);
    }
    return snprintf(buf, len, "unknown error");
}
