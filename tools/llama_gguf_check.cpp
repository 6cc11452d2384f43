// Loads a GGUF file with llama.cpp's own reader and prints what it sees. Exit 0 if accepted, 1 if
// rejected, 2 on usage errors. Built by tools/build_llama_gguf_check.sh.
//
//   llama_gguf_check FILE          gguf_init_from_file with no_alloc = false: also reads the whole data
//                                  section including the padding after the last tensor
//   llama_gguf_check --mmap FILE   what llama.cpp's model loader does: no_alloc = true, then each tensor's
//                                  data must lie within the file (llama_model_loader's bounds check)
#include "ggml.h"
#include "gguf.h"
#include <cstdio>
#include <cstring>

int main(int argc, char ** argv) {
    bool mmap_mode = argc == 3 && strcmp(argv[1], "--mmap") == 0;
    if (argc != 2 && !mmap_mode) {
        fprintf(stderr, "usage: %s [--mmap] FILE\n", argv[0]);
        return 2;
    }
    const char * path = argv[argc - 1];
    ggml_context * data = nullptr;
    gguf_init_params p = { /*no_alloc =*/ mmap_mode, &data };
    gguf_context * ctx = gguf_init_from_file(path, p);
    if (!ctx) {
        printf("REJECTED %s\n", path);
        return 1;
    }
    size_t file_size = 0;
    if (FILE * f = fopen(path, "rb")) {
        fseek(f, 0, SEEK_END);
        file_size = (size_t) ftell(f);
        fclose(f);
    }
    printf("ACCEPTED %s: v%u, %lld keys, %lld tensors, alignment %zu, data offset %zu\n", path,
           gguf_get_version(ctx), (long long) gguf_get_n_kv(ctx), (long long) gguf_get_n_tensors(ctx),
           gguf_get_alignment(ctx), gguf_get_data_offset(ctx));
    int rc = 0;
    for (int64_t i = 0; i < gguf_get_n_tensors(ctx); i++) {
        const char * name = gguf_get_tensor_name(ctx, i);
        ggml_tensor * t = ggml_get_tensor(data, name);
        size_t offs = gguf_get_data_offset(ctx) + gguf_get_tensor_offset(ctx, i);
        if (offs + ggml_nbytes(t) < offs || offs + ggml_nbytes(t) > file_size) {
            fprintf(stderr, "tensor '%s' data is not within the file bounds\n", name);
            rc = 1;
        }
        printf("  %s type %s ne [%lld %lld %lld %lld] offset %zu nbytes %zu\n", name,
               ggml_type_name(gguf_get_tensor_type(ctx, i)), (long long) t->ne[0], (long long) t->ne[1],
               (long long) t->ne[2], (long long) t->ne[3], gguf_get_tensor_offset(ctx, i), ggml_nbytes(t));
    }
    gguf_free(ctx);
    ggml_free(data);
    if (rc) printf("REJECTED %s\n", path);
    return rc;
}
