/*
 * run_vectors: decodes Athena test vectors (fixtures/vectors/README.md) with the C port.
 *
 *   cc -std=c99 -O2 -ffp-contract=off -Wall -Wextra tools/c/athena_decode.c \
 *      tools/c/run_vectors.c -o run_vectors
 *   ./run_vectors [--write NAME] PATH...
 *   ./run_vectors --matvec PATH...
 *   ./run_vectors --dump-f16 FILE
 *
 * PATH is one vector folder (holding params.txt) or a folder of vector folders. For every
 * vector: validate (athena_encoded_init), check (athena_check), decode the whole weight and
 * every row on its own, then compare bit for bit with expected.f32, or with --write NAME store
 * the decoded floats (little-endian) as NAME in the vector folder instead.
 *
 * Prints one line per vector: "ok NAME", or "FAIL NAME: CODE: MESSAGE" where CODE and MESSAGE
 * are athena_status_name() and athena_error_message() (identical to the Rust decoder's
 * DecodeError::code() and Display), or "FAIL NAME: mismatch ..." / "FAIL NAME: io: ...".
 * --matvec runs athena_matvec instead of the decoder on every vector, with the input
 * x_j = (k_j - 2^23) / 2^23 (exact in binary32, in [-1, 1)), k_j = bits 40..63 of the j-th
 * state of the LCG s <- s * 6364136223846793005 + 1442695040888963407 (mod 2^64) seeded with the
 * 64-bit FNV-1a hash of the vector's folder name, and prints "matvec NAME Y_0 ... Y_{N-1}"
 * (each y_i as 8 hex digits of its binary32 bits); tests/c_decoder.rs compares them with the
 * Rust decoder's weight times the same x. It also checks that wrong x, y and scratch lengths
 * are refused (length_mismatch) and that a longer scratch gives the same bits.
 * --dump-f16 writes athena_f16_to_f32(h) for h = 0 .. 65535 as 65536 little-endian f32 to
 * FILE (the tests compare it with the Rust conversion, NaN payloads included).
 * Exit status: 0 if every vector passed, 1 if any failed, 2 on usage errors.
 * Uses POSIX opendir/readdir to list folders.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "athena_decode.h"

typedef struct {
    uint8_t *data;
    size_t len;
} buffer;

static char io_error[512];
static int matvec_mode;

/* buf = a "/" b; 0 if it does not fit. */
static int join_path(char *buf, size_t size, const char *a, const char *b) {
    int n = snprintf(buf, size, "%s/%s", a, b);
    return n >= 0 && (size_t)n < size;
}

/* Reads a whole file. Missing optional files give an empty buffer; returns 0 on error. */
static int read_file(const char *dir, const char *name, int optional, buffer *out) {
    char path[4096];
    FILE *f;
    long size;
    out->data = NULL;
    out->len = 0;
    if (!join_path(path, sizeof path, dir, name)) {
        snprintf(io_error, sizeof io_error, "path too long");
        return 0;
    }
    f = fopen(path, "rb");
    if (!f) {
        if (optional && errno == ENOENT) return 1;
        snprintf(io_error, sizeof io_error, "cannot open %s: %s", name, strerror(errno));
        return 0;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        snprintf(io_error, sizeof io_error, "cannot size %s", name);
        fclose(f);
        return 0;
    }
    out->len = (size_t)size;
    out->data = malloc(out->len ? out->len : 1);
    if (!out->data || fread(out->data, 1, out->len, f) != out->len) {
        snprintf(io_error, sizeof io_error, "cannot read %s", name);
        fclose(f);
        free(out->data);
        out->data = NULL;
        return 0;
    }
    fclose(f);
    return 1;
}

static int parse_u64(const char *s, uint64_t *out) {
    uint64_t v = 0;
    if (!*s) return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10) return 0;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 1;
}

/* Parses params.txt ("key=value" lines, every key at most once; rotation (0 if missing) and
 * row_scales (0 or 1, 0 if missing) are optional, the others required). */
static int parse_params(const buffer *text, athena_params *p) {
    static const char *const keys[] = {"rows",      "cols",      "vector_dim", "centroids",
                                       "tile_rows", "tile_cols", "rank",       "codebook",
                                       "rotation",  "row_scales"};
    enum { NKEYS = sizeof keys / sizeof keys[0] };
    unsigned seen = 0;
    size_t pos = 0;
    memset(p, 0, sizeof *p);
    while (pos < text->len) {
        char line[256], *eq, *key, *val;
        size_t n = 0, k;
        uint64_t v = 0;
        while (pos < text->len && text->data[pos] != '\n') {
            if (n + 1 >= sizeof line) {
                snprintf(io_error, sizeof io_error, "params.txt: line too long");
                return 0;
            }
            line[n++] = (char)text->data[pos++];
        }
        pos++;
        while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' ')) n--;
        line[n] = 0;
        if (n == 0) continue;
        eq = strchr(line, '=');
        if (!eq) {
            snprintf(io_error, sizeof io_error, "params.txt: bad line '%s'", line);
            return 0;
        }
        *eq = 0;
        key = line;
        val = eq + 1;
        for (k = 0; k < NKEYS; k++)
            if (strcmp(key, keys[k]) == 0) break;
        if (k == NKEYS || (seen & (1u << k))) {
            snprintf(io_error, sizeof io_error, "params.txt: unknown or repeated key '%s'", key);
            return 0;
        }
        seen |= 1u << k;
        if (k == 7) {
            if (strcmp(val, "i8") == 0) p->codebook = ATHENA_CB_I8;
            else if (strcmp(val, "f16") == 0) p->codebook = ATHENA_CB_F16;
            else {
                snprintf(io_error, sizeof io_error, "params.txt: bad codebook '%s'", val);
                return 0;
            }
            continue;
        }
        if (!parse_u64(val, &v) ||
            ((k == 2 || k == 3 || k == 6 || k == 8) && v > UINT32_MAX) || (k == 9 && v > 1)) {
            snprintf(io_error, sizeof io_error, "params.txt: bad value for %s", key);
            return 0;
        }
        switch (k) {
        case 0: p->rows = v; break;
        case 1: p->cols = v; break;
        case 2: p->vector_dim = (uint32_t)v; break;
        case 3: p->centroids = (uint32_t)v; break;
        case 4: p->tile_rows = v; break;
        case 5: p->tile_cols = v; break;
        case 6: p->rank = (uint32_t)v; break;
        case 8: p->rotation = (uint32_t)v; break;
        case 9: p->row_scales = (int)v; break;
        }
    }
    if ((seen & 0xffu) != 0xffu) {
        snprintf(io_error, sizeof io_error, "params.txt: missing keys");
        return 0;
    }
    return 1;
}

static int write_floats(const char *dir, const char *name, const float *v, size_t n) {
    char path[4096];
    FILE *f;
    size_t i;
    if (!join_path(path, sizeof path, dir, name)) return 0;
    f = fopen(path, "wb");
    if (!f) return 0;
    for (i = 0; i < n; i++) {
        uint32_t u;
        unsigned char b[4];
        memcpy(&u, &v[i], 4);
        b[0] = (unsigned char)u;
        b[1] = (unsigned char)(u >> 8);
        b[2] = (unsigned char)(u >> 16);
        b[3] = (unsigned char)(u >> 24);
        if (fwrite(b, 1, 4, f) != 4) {
            fclose(f);
            return 0;
        }
    }
    return fclose(f) == 0;
}

static uint32_t le_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s && s[1] ? s + 1 : path;
}

/* The test input of --matvec: see the header comment. */
static void matvec_input(const char *name, float *x, size_t len) {
    uint64_t s = 14695981039346656037u;
    size_t j;
    for (; *name; name++) s = (s ^ (unsigned char)*name) * 1099511628211u;
    for (j = 0; j < len; j++) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        x[j] = (float)((int32_t)(s >> 40) - 8388608) / 8388608.0f;
    }
}

/* Expects athena_matvec to refuse a wrong length with length_mismatch naming `what`. */
static int expect_refusal(const char *name, const char *what, athena_status st,
                          const athena_error *err) {
    char msg[512];
    if (st == ATHENA_E_LENGTH_MISMATCH && err->what && strcmp(err->what, what) == 0) return 1;
    athena_error_message(err, msg, sizeof msg);
    printf("FAIL %s: matvec accepted a wrong %s length (%s: %s)\n", name, what,
           athena_status_name(st), msg);
    return 0;
}

/* --matvec on one valid encoded weight; returns 1 if it passed. */
static int run_matvec(const athena_encoded *enc, const char *name) {
    size_t rows = (size_t)enc->params.rows, cols = (size_t)enc->params.cols;
    size_t need = athena_matvec_scratch_len(&enc->params), i;
    float *x = malloc(cols * sizeof(float)), *y = malloc(rows * sizeof(float));
    float *y2 = malloc(rows * sizeof(float)), *scratch = malloc((need + 3) * sizeof(float));
    athena_error err;
    athena_status st;
    char msg[512];
    int ok = 0;
    if (!x || !y || !y2 || !scratch || need == 0) {
        printf("FAIL %s: io: out of memory or no scratch length\n", name);
        goto done;
    }
    matvec_input(name, x, cols);
    if (!expect_refusal(name, "input",
                        athena_matvec(enc, x, cols - 1, y, rows, scratch, need, &err), &err) ||
        !expect_refusal(name, "output",
                        athena_matvec(enc, x, cols, y, rows + 1, scratch, need, &err), &err) ||
        !expect_refusal(name, "scratch",
                        athena_matvec(enc, x, cols, y, rows, scratch, need - 1, &err), &err))
        goto done;
    if ((st = athena_matvec(enc, x, cols, y, rows, scratch, need, &err)) != ATHENA_OK ||
        (st = athena_matvec(enc, x, cols, y2, rows, scratch, need + 3, &err)) != ATHENA_OK) {
        athena_error_message(&err, msg, sizeof msg);
        printf("FAIL %s: %s: %s\n", name, athena_status_name(st), msg);
        goto done;
    }
    if (memcmp(y, y2, rows * sizeof(float)) != 0) {
        printf("FAIL %s: matvec differs with a longer scratch\n", name);
        goto done;
    }
    printf("matvec %s", name);
    for (i = 0; i < rows; i++) {
        uint32_t u;
        memcpy(&u, &y[i], 4);
        printf(" %08" PRIx32, u);
    }
    printf("\n");
    ok = 1;
done:
    free(x);
    free(y);
    free(y2);
    free(scratch);
    return ok;
}

/* Returns 1 if the vector passed. */
static int run_one(const char *dir, const char *write_name) {
    enum { PARAMS, INDICES, CODEBOOK, SCALES, LRA, LRB, SIGNS, ROW_SCALES, EXPECTED, NFILES };
    static const char *const names[NFILES] = {
        "params.txt",    "indices.bin", "codebook.bin",   "scales.bin",  "lowrank_a.bin",
        "lowrank_b.bin", "signs.bin",   "row_scales.bin", "expected.f32"};
    static const int optional[NFILES] = {0, 0, 0, 1, 1, 1, 1, 1, 0};
    buffer files[NFILES];
    athena_params params;
    athena_encoded enc;
    athena_error err;
    float *out = NULL, *row_out = NULL;
    int ok = 0, i;
    const char *name = base_name(dir);
    char msg[512];

    memset(files, 0, sizeof files);
    for (i = 0; i < NFILES; i++) {
        if (i == EXPECTED && (write_name || matvec_mode)) continue;
        if (!read_file(dir, names[i], optional[i], &files[i])) {
            printf("FAIL %s: io: %s\n", name, io_error);
            goto done;
        }
    }
    if (!parse_params(&files[PARAMS], &params)) {
        printf("FAIL %s: io: %s\n", name, io_error);
        goto done;
    }
    if (athena_encoded_init(&enc, &params, files[INDICES].data, files[INDICES].len,
                            files[CODEBOOK].data, files[CODEBOOK].len, files[SCALES].data,
                            files[SCALES].len, files[LRA].data, files[LRA].len, files[LRB].data,
                            files[LRB].len, files[SIGNS].data, files[SIGNS].len,
                            files[ROW_SCALES].data, files[ROW_SCALES].len, &err) != ATHENA_OK ||
        athena_check(&enc, &err) != ATHENA_OK) {
        athena_error_message(&err, msg, sizeof msg);
        printf("FAIL %s: %s: %s\n", name, athena_status_name(err.status), msg);
        goto done;
    }
    if (matvec_mode) {
        ok = run_matvec(&enc, name);
        goto done;
    }
    out = malloc(enc.sizes.output_len * sizeof(float));
    row_out = malloc((size_t)params.cols * sizeof(float));
    if (!out || !row_out) {
        printf("FAIL %s: io: out of memory\n", name);
        goto done;
    }
    if (athena_decode(&enc, out, enc.sizes.output_len, &err) != ATHENA_OK) {
        athena_error_message(&err, msg, sizeof msg);
        printf("FAIL %s: %s: %s\n", name, athena_status_name(err.status), msg);
        goto done;
    }
    if (write_name) {
        if (!write_floats(dir, write_name, out, enc.sizes.output_len)) {
            printf("FAIL %s: io: cannot write %s\n", name, write_name);
            goto done;
        }
        printf("ok %s (wrote %s)\n", name, write_name);
        ok = 1;
        goto done;
    }
    if (files[EXPECTED].len != enc.sizes.output_len * 4) {
        printf("FAIL %s: io: expected.f32 has %zu bytes, want %zu\n", name, files[EXPECTED].len,
               enc.sizes.output_len * 4);
        goto done;
    }
    {
        size_t cols = (size_t)params.cols, r, j;
        for (r = 0; r < (size_t)params.rows; r++) {
            if (athena_decode_row(&enc, r, row_out, cols, &err) != ATHENA_OK) {
                athena_error_message(&err, msg, sizeof msg);
                printf("FAIL %s: %s: %s\n", name, athena_status_name(err.status), msg);
                goto done;
            }
            for (j = 0; j < cols; j++) {
                size_t e = r * cols + j;
                uint32_t want = le_u32(files[EXPECTED].data + 4 * e), got, got_row;
                memcpy(&got, &out[e], 4);
                memcpy(&got_row, &row_out[j], 4);
                if (got != want || got_row != want) {
                    printf("FAIL %s: mismatch at row %zu, column %zu: got 0x%08" PRIx32
                           " (row-wise 0x%08" PRIx32 "), want 0x%08" PRIx32 "\n",
                           name, r, j, got, got_row, want);
                    goto done;
                }
            }
        }
    }
    printf("ok %s\n", name);
    ok = 1;
done:
    for (i = 0; i < NFILES; i++) free(files[i].data);
    free(out);
    free(row_out);
    return ok;
}

static int has_params(const char *dir) {
    char path[4096];
    struct stat st;
    if (!join_path(path, sizeof path, dir, "params.txt")) return 0;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every vector folder directly under `root`, in name order; returns failures (-1 on error). */
static int run_dir(const char *root, const char *write_name) {
    DIR *d = opendir(root);
    struct dirent *ent;
    char **list = NULL;
    size_t n = 0, cap = 0, i;
    int failures = 0;
    if (!d) {
        fprintf(stderr, "run_vectors: cannot open %s: %s\n", root, strerror(errno));
        return -1;
    }
    while ((ent = readdir(d)) != NULL) {
        char path[4096];
        if (ent->d_name[0] == '.') continue;
        if (!join_path(path, sizeof path, root, ent->d_name) || !has_params(path)) continue;
        if (n == cap) {
            char **grown = realloc(list, (cap = cap ? 2 * cap : 64) * sizeof *list);
            if (!grown) break;
            list = grown;
        }
        list[n] = malloc(strlen(path) + 1);
        if (!list[n]) break;
        strcpy(list[n++], path);
    }
    closedir(d);
    if (n == 0) {
        fprintf(stderr, "run_vectors: no vector folders in %s\n", root);
        free(list);
        return -1;
    }
    qsort(list, n, sizeof *list, cmp_str);
    for (i = 0; i < n; i++) {
        if (!run_one(list[i], write_name)) failures++;
        free(list[i]);
    }
    free(list);
    return failures;
}

static int dump_f16(const char *path) {
    static float all[65536];
    const char *slash = strrchr(path, '/');
    char dir[4096];
    size_t h;
    for (h = 0; h < 65536; h++) all[h] = athena_f16_to_f32((uint16_t)h);
    if (!slash) return write_floats(".", path, all, 65536) ? 0 : 1;
    if ((size_t)(slash - path) >= sizeof dir) return 1;
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = 0;
    return write_floats(dir, slash + 1, all, 65536) ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *write_name = NULL;
    int i = 1, failures = 0, paths = 0;
    if (argc == 3 && strcmp(argv[1], "--dump-f16") == 0) return dump_f16(argv[2]);
    if (i < argc && strcmp(argv[i], "--matvec") == 0) {
        matvec_mode = 1;
        i++;
    } else if (i + 1 < argc && strcmp(argv[i], "--write") == 0) {
        write_name = argv[i + 1];
        i += 2;
    }
    for (; i < argc; i++) {
        paths++;
        if (has_params(argv[i])) {
            if (!run_one(argv[i], write_name)) failures++;
        } else {
            int f = run_dir(argv[i], write_name);
            if (f < 0) return 2;
            failures += f;
        }
    }
    if (paths == 0) {
        fprintf(stderr, "usage: run_vectors [--write NAME | --matvec] PATH... | run_vectors --dump-f16 FILE\n");
        return 2;
    }
    return failures ? 1 : 0;
}
