/*
 * athena_decode.h: reference dequantizer for the Athena vector-codebook encoding, versions 1
 * to 4 (format-spec/athena-encoding.md). A C99 port of the Rust crate athena-decode: same
 * validation, same error names and messages, bit-identical output. Also a fused
 * matrix-vector product (athena_matvec, spec section 10) that multiplies by the weight
 * without decoding it.
 *
 * Dependencies: libc only (stdint.h, stddef.h, string.h, stdio.h for snprintf).
 * The library never allocates; the caller owns every buffer.
 *
 * BUILD FLAGS (required): -std=c99 -ffp-contract=off
 *   Output must be bit-exact IEEE-754 binary32 with round-to-nearest-even and every addition
 *   rounded on its own. Writing a product into a temporary is NOT enough to stop a C compiler
 *   from fusing it with a later addition (GCC in GNU mode contracts across statements), so
 *   the build must pass -ffp-contract=off (GCC, Clang) or the equivalent (MSVC: /fp:precise
 *   without /fp:contract). Never build with -ffast-math / -Ofast (they reassociate sums and
 *   flush subnormals). The code also refuses to compile where float arithmetic is evaluated
 *   in wider precision (FLT_EVAL_METHOD != 0, e.g. x87 without -msse2 -mfpmath=sse).
 *   The flag is essential: the row-scale product of step 3 (version 3, v * f32(rs[i])) is
 *   rounded, and contracting it with the low-rank addition into fma(v, s, acc) changes
 *   results (the test vectors *_rs_fma catch it). The other products of steps 3-4 (f16 x u8,
 *   f16 x f16) are exact in binary32, but the flag must not be dropped for them either.
 *
 * Usage:
 *   athena_encoded enc; athena_error err;
 *   if (athena_encoded_init(&enc, &params, idx, idx_len, cb, cb_len, cbs, cbs_len,
 *                           lra, lra_len, lrb, lrb_len, rot, rot_len, rs, rs_len,
 *                           &err) != ATHENA_OK ||
 *       athena_check(&enc, &err) != ATHENA_OK ||
 *       athena_decode(&enc, out, out_len, &err) != ATHENA_OK) {
 *       char msg[256]; athena_error_message(&err, msg, sizeof msg); ...
 *   }
 */
#ifndef ATHENA_DECODE_H
#define ATHENA_DECODE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The highest encoding version this decoder implements (metadata key
 * athena.encoding_version); it implements every version from 1 up to this one. */
#define ATHENA_ENCODING_VERSION 4u

typedef enum { ATHENA_CB_I8 = 0, ATHENA_CB_F16 = 1 } athena_codebook_type;

/* Parameters of one encoded weight (spec: "Parameters"). */
typedef struct {
    uint64_t rows;       /* N */
    uint64_t cols;       /* M >= d; d need not divide it (version 4: partial last group) */
    uint32_t vector_dim; /* d, 1..8 */
    uint32_t centroids;  /* n, power of two in 2..65536 */
    uint64_t tile_rows;  /* R, 1..N */
    uint64_t tile_cols;  /* C in d..M, a multiple of d or M itself */
    uint32_t rank;       /* r, 0..min(N, M) */
    athena_codebook_type codebook;
    uint32_t rotation;   /* B: 0 (none), or a power of four in 4..4096 dividing M */
    int row_scales;      /* rs: nonzero = every row has an f16 scale (encoding version 3) */
} athena_params;

/* Status codes; athena_status_name() gives the same snake_case names as the Rust
 * DecodeError::code(). */
typedef enum {
    ATHENA_OK = 0,
    ATHENA_E_INVALID_PARAM,       /* what = parameter name, a = value */
    ATHENA_E_OVERFLOW,            /* what = the size being computed */
    ATHENA_E_LENGTH_MISMATCH,     /* what = component, a = expected, b = actual */
    ATHENA_E_ROW_OUT_OF_RANGE,    /* a = row, b = rows */
    ATHENA_E_GROUP_OUT_OF_RANGE,  /* a = group, b = groups */
    ATHENA_E_INDEX_OUT_OF_RANGE,  /* a = row, b = group, c = index */
    ATHENA_E_NONZERO_PADDING,     /* a = row */
    ATHENA_E_NON_FINITE_CODEBOOK, /* a = codebook, b = entry, c = dimension */
    ATHENA_E_NON_FINITE_SCALE,    /* what = "offset" or "step", a = codebook, b = dimension */
    ATHENA_E_NON_FINITE_LOWRANK,  /* what = "lowrank_a" or "lowrank_b", a = row, b = column */
    ATHENA_E_NONZERO_SIGN_PADDING, /* no details; after the version 1 codes so their values stay */
    ATHENA_E_NON_FINITE_ROW_SCALE  /* a = row; appended in version 3 so older values stay */
} athena_status;

/* Details of a failure. Every function taking an athena_error* accepts NULL. */
typedef struct {
    athena_status status;
    const char *what; /* static string or NULL */
    uint64_t a, b, c;
} athena_error;

/* Sizes derived from valid parameters (bytes, except output_len in floats). */
typedef struct {
    uint64_t row_stride;  /* S = ceil(G * b / 8) */
    uint64_t tiles_r;     /* TR */
    uint64_t tiles_c;     /* TC */
    uint64_t codebooks;   /* T */
    size_t output_len;    /* N * M */
    size_t indices_len;   /* S * N */
    size_t codebook_len;  /* T * n * d * (1 or 2) */
    size_t scales_len;    /* T * d * 4 for i8, 0 for f16 */
    size_t lowrank_a_len; /* N * r * 2 */
    size_t lowrank_b_len; /* r * M * 2 */
    size_t signs_len;     /* ceil(M / 8) if B > 0, else 0 */
    size_t row_scales_len; /* 2 * N if rs, else 0 */
} athena_sizes;

/* A validated encoded weight. Fill with athena_encoded_init; treat the fields as read-only. */
typedef struct {
    athena_params params;
    athena_sizes sizes;
    const uint8_t *indices, *codebook, *scales, *lowrank_a, *lowrank_b, *signs, *row_scales;
} athena_encoded;

/* Exact IEEE half -> single conversion (subnormals exact; NaN payload kept, returned quiet). */
float athena_f16_to_f32(uint16_t bits);

/* Checks every constraint and computes every size with overflow checks (into *sizes if not
 * NULL). Checks in the same order as the Rust Params::validate. */
athena_status athena_params_validate(const athena_params *p, athena_sizes *sizes,
                                     athena_error *err);

/* b = log2(centroids). */
uint32_t athena_index_bits(const athena_params *p);

/* Validates the parameters and the length of every buffer (absent components: NULL, 0), in the
 * order of the Rust Encoded::new: indices, codebook, scales, lowrank_a, lowrank_b, signs
 * (<W>.athena_rot), row_scales (<W>.athena_rs, N little-endian f16). O(1): does not read the
 * buffers. */
athena_status athena_encoded_init(athena_encoded *e, const athena_params *p,
                                  const uint8_t *indices, size_t indices_len,
                                  const uint8_t *codebook, size_t codebook_len,
                                  const uint8_t *scales, size_t scales_len,
                                  const uint8_t *lowrank_a, size_t lowrank_a_len,
                                  const uint8_t *lowrank_b, size_t lowrank_b_len,
                                  const uint8_t *signs, size_t signs_len,
                                  const uint8_t *row_scales, size_t row_scales_len,
                                  athena_error *err);

/* The index of group `group` of row `row`. */
athena_status athena_index(const athena_encoded *e, uint64_t row, uint64_t group,
                           uint32_t *out, athena_error *err);

/* Scans the contents; reports the first problem in the order of the Rust Encoded::check:
 * index rows (index < n, zero padding), f16 codebook values, int8 offsets/steps, A, B, the
 * row scales (finite), the padding bits of the rotation signs. */
athena_status athena_check(const athena_encoded *e, athena_error *err);

/* Decodes one row into out[0 .. cols). out_len must equal cols. */
athena_status athena_decode_row(const athena_encoded *e, uint64_t row, float *out,
                                size_t out_len, athena_error *err);

/* Decodes the whole weight, row-major, into out[0 .. rows*cols). */
athena_status athena_decode(const athena_encoded *e, float *out, size_t out_len,
                            athena_error *err);

/* ---- fused matrix-vector product (spec section 10, informative) ----------------------
 *
 * athena_matvec computes y = W x (W = the decoded N x M weight, x: M floats, y: N floats)
 * straight from the encoded weight, without decoding W: the rotation is applied once to x
 * (x' = Q^T x), each row's codebook values are summed against x' (for i8 codebooks with the
 * offsets and steps factored out per tile, so the inner loop multiplies the raw code bytes),
 * the row scale multiplies the row's sum, and the low-rank term uses z = B x' computed once.
 * The summation order is the one of spec section 10. The result is NOT bit-identical with
 * athena_decode followed by a product (other additions, in another order); spec section 10
 * states the error bound the tests check. It needs the same build flags as the decoder.
 * Call athena_check first (non-finite components just propagate into y, as in decoding). */

/* Floats of scratch athena_matvec needs: M (x') + r (z), plus M + TC for i8 codebooks (the
 * per-column x'_j * step and the per-tile offset sums). 0 if the parameters are invalid or the
 * length overflows size_t. */
size_t athena_matvec_scratch_len(const athena_params *p);

/* y[0 .. N) = W x[0 .. M). x_len must equal cols (error "input"), y_len rows (error
 * "output"), scratch_len must be at least athena_matvec_scratch_len (error "scratch";
 * length_mismatch with a = the length needed, b = the length given). x, y and scratch must not
 * overlap. Never allocates. */
athena_status athena_matvec(const athena_encoded *e, const float *x, size_t x_len, float *y,
                            size_t y_len, float *scratch, size_t scratch_len,
                            athena_error *err);

/* "ok", "invalid_param", "overflow", ... (same as Rust DecodeError::code()). */
const char *athena_status_name(athena_status s);

/* Formats the same message as the Rust Display impl. snprintf semantics. */
int athena_error_message(const athena_error *err, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* ATHENA_DECODE_H */
