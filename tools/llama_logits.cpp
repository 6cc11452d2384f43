// llama_logits: llama.cpp's logits of a token sequence, for checking Athena's model code against
// an independent implementation (tools/check-families.sh).
//
//   llama_logits MODEL.gguf --tokens 1,2,3,... --out logits.bin [--threads N]
//
// Loads MODEL on the CPU, evaluates the tokens as one batch at positions 0..n-1 with the logits of
// every position requested, and writes them as little-endian f32, row-major [tokens x n_vocab]
// (the layout `cargo run --example dump-logits` writes). The KV cache is kept in f32 and flash
// attention is off, so the only rounding is the model's own. On success prints one line,
//   tokens=48 n_vocab=49152 arch=llama
// on failure one line on stderr (with llama.cpp's first error message when it logged one) and exits
// 1; a usage error exits 2. OUT is written under a temporary name and renamed.
//
// Built by tools/build_llama_logits.sh against libllama from the llama-cpp-python 0.3.36 sdist.
#include "llama.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// llama.cpp's first error message, quoted in ours.
static std::string g_error;
// Whether the message in g_error is still being continued (GGML_LOG_LEVEL_CONT).
static bool g_error_open = false;

static void log_callback(enum ggml_log_level level, const char * text, void *) {
    static std::string pending;
    static bool pending_error = false;
    // llama.cpp logs a message in pieces; GGML_LOG_LEVEL_CONT continues the previous one.
    if (level != GGML_LOG_LEVEL_CONT) {
        g_error_open = false;
        pending.clear();
        pending_error = level == GGML_LOG_LEVEL_ERROR;
    }
    if (!pending_error) {
        return;
    }
    pending += text;
    std::string line = pending;
    while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) {
        line.pop_back();
    }
    for (char & c : line) {
        if (c == '\n') {
            c = ' ';
        }
    }
    // The first error of a failure is its cause (later ones report the failure up the stack).
    if (!line.empty() && (g_error.empty() || g_error_open)) {
        g_error = line;
        g_error_open = true;
    }
}

[[noreturn]] static void fail(const std::string & what) {
    if (g_error.empty()) {
        fprintf(stderr, "llama_logits: %s\n", what.c_str());
    } else {
        fprintf(stderr, "llama_logits: %s (llama.cpp: %s)\n", what.c_str(), g_error.c_str());
    }
    exit(1);
}

[[noreturn]] static void usage(const std::string & what) {
    fprintf(stderr, "llama_logits: %s (usage: llama_logits MODEL.gguf --tokens 1,2,3 --out LOGITS.bin [--threads N])\n",
            what.c_str());
    exit(2);
}

static std::vector<llama_token> parse_tokens(const std::string & s) {
    std::vector<llama_token> out;
    size_t start = 0;
    while (start <= s.size()) {
        size_t end = s.find(',', start);
        if (end == std::string::npos) {
            end = s.size();
        }
        std::string item = s.substr(start, end - start);
        char * rest = nullptr;
        errno = 0;
        long v = strtol(item.c_str(), &rest, 10);
        if (item.empty() || *rest != '\0' || errno != 0 || v < 0 || v > 0x7fffffffL) {
            usage("--tokens: '" + item + "' is not a token id (comma-separated non-negative integers)");
        }
        out.push_back((llama_token) v);
        start = end + 1;
    }
    return out;
}

int main(int argc, char ** argv) {
    std::string model_path, out_path, tokens_arg;
    int threads = 2;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                usage(a + " needs a value");
            }
            return argv[++i];
        };
        if (a == "--tokens") {
            tokens_arg = value();
        } else if (a == "--out") {
            out_path = value();
        } else if (a == "--threads") {
            threads = atoi(value().c_str());
            if (threads < 1) {
                usage("--threads must be a positive integer");
            }
        } else if (a == "-h" || a == "--help") {
            usage("llama.cpp's logits of every position of a token sequence");
        } else if (!a.empty() && a[0] == '-') {
            usage("unknown option '" + a + "'");
        } else if (model_path.empty()) {
            model_path = a;
        } else {
            usage("unexpected argument '" + a + "'");
        }
    }
    if (model_path.empty() || tokens_arg.empty() || out_path.empty()) {
        usage("MODEL, --tokens and --out are required");
    }
    std::vector<llama_token> tokens = parse_tokens(tokens_arg);
    const int32_t n = (int32_t) tokens.size();

    llama_log_set(log_callback, nullptr);
    llama_backend_init();

    llama_model_params mparams = llama_model_default_params();
    mparams.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mparams);
    if (!model) {
        fail(model_path + ": llama.cpp could not load the model");
    }
    char arch[128] = "?";
    llama_model_meta_val_str(model, "general.architecture", arch, sizeof(arch));
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    for (int32_t i = 0; i < n; i++) {
        if (tokens[i] >= n_vocab) {
            fail("--tokens: token " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
                 " is not below the vocabulary size " + std::to_string(n_vocab));
        }
    }

    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = (uint32_t) (n < 64 ? 64 : n);
    cparams.n_batch = (uint32_t) n;
    cparams.n_ubatch = (uint32_t) n;
    cparams.n_seq_max = 1;
    cparams.n_threads = threads;
    cparams.n_threads_batch = threads;
    cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cparams.type_k = GGML_TYPE_F32;
    cparams.type_v = GGML_TYPE_F32;
    cparams.swa_full = true;
    cparams.no_perf = true;
    llama_context * ctx = llama_init_from_model(model, cparams);
    if (!ctx) {
        fail(model_path + ": llama.cpp could not create a context of " + std::to_string(cparams.n_ctx) + " tokens");
    }

    llama_batch batch = llama_batch_init(n, 0, 1);
    for (int32_t i = 0; i < n; i++) {
        batch.token[i] = tokens[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    int32_t rc = llama_decode(ctx, batch);
    if (rc != 0) {
        fail(model_path + ": llama_decode returned " + std::to_string(rc));
    }

    std::string tmp = out_path + ".tmp";
    FILE * f = fopen(tmp.c_str(), "wb");
    if (!f) {
        fail(tmp + ": " + strerror(errno));
    }
    for (int32_t i = 0; i < n; i++) {
        const float * row = llama_get_logits_ith(ctx, i);
        if (!row) {
            fclose(f);
            remove(tmp.c_str());
            fail("no logits for position " + std::to_string(i));
        }
        // ggml stores f32 in host order; every platform llama.cpp's CPU backend runs on here is
        // little-endian, which the format asks for.
        if (fwrite(row, sizeof(float), (size_t) n_vocab, f) != (size_t) n_vocab) {
            int e = errno;
            fclose(f);
            remove(tmp.c_str());
            fail(tmp + ": " + strerror(e));
        }
    }
    if (fclose(f) != 0) {
        int e = errno;
        remove(tmp.c_str());
        fail(tmp + ": " + strerror(e));
    }
    if (rename(tmp.c_str(), out_path.c_str()) != 0) {
        int e = errno;
        remove(tmp.c_str());
        fail(out_path + ": " + strerror(e));
    }
    printf("tokens=%d n_vocab=%d arch=%s\n", n, n_vocab, arch);

    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
