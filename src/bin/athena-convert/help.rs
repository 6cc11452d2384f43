//! athena-convert's help texts.

pub const ABOUT: &str =
    "Convert a Hugging Face LLM checkpoint (llama incl. Llama 3.x, mistral, qwen2, qwen3, gemma3, phi3) into a GGUF file.";

pub const LONG_ABOUT: &str = "\
Convert a Hugging Face LLM checkpoint (llama incl. Llama 3.x, mistral, qwen2, qwen3, gemma3
text, phi3 / Phi-4-mini) into a GGUF file that stock llama.cpp loads: every tensor under its llama.cpp name and layout (q/k rows permuted for llama
and mistral, tied embeddings without output.weight), the full llama.cpp metadata
(hyperparameters, tokenizer with merges or scores, special tokens, pre-tokenizer name, chat
template).

MODEL is a Hugging Face folder (config.json, *.safetensors, tokenizer.json, and optionally
tokenizer_config.json / chat_template.jinja). For convenience the plain export also takes a
.gguf MODEL: its tensors are dequantized to f32 and re-encoded, and its tokenizer is rebuilt
from its own vocabulary (the way athena-materialize writes tokenizer.json). Athena quantization
(--bits/--vq) needs a folder: `athena-materialize MODEL.gguf DIR` writes one.

The inputs are checked before any work: hyperparameters (sizes, norm epsilon, RoPE base),
every tensor present in its shape, no NaN or infinite weight, the texts readable, OUT a
writable file path that is none of the files the run reads (also with --force).

The output is written to a temporary file beside OUT and renamed into place only when complete;
on any error nothing is left behind.";

pub const AFTER_HELP: &str = "\
Examples:
  # Half-precision export of an HF folder (the default type is f16)
  athena-convert ./SmolLM2-135M-Instruct smollm2-f16.gguf

  # Q8_0, with a custom general.name
  athena-convert ./Qwen2.5-Coder-0.5B qwen-q8_0.gguf --type q8_0 --name Qwen2.5-Coder-0.5B

  # Re-encode an existing GGUF (e.g. a dequantized Q4_1) as bf16, replacing OUT if it exists
  athena-convert SmolLM2-135M-Instruct.Q4_1.gguf smollm2-bf16.gguf --type bf16 --force

Tensor types (llama.cpp's rules): 1-D tensors, norms and biases are always F32. With --type q8_0,
a matrix whose rows are not a multiple of 32 long is written as F16 instead.

Athena quantization (needs an HF folder and the calibration text; see tools/fetch-models.sh):
  # 3 bits per weight on average over the quantized weights (the linear layers, the token
  # embedding and the output head), mixed precision from the Hessians
  athena-convert ~/.cache/athena/models/SmolLM2-135M-Instruct smollm2-3bit.gguf --bits 3

  # A budget for the whole file: 3.5 bits per parameter of every tensor byte, norms included,
  # to compare with other files by size
  athena-convert MODEL out.gguf --file-bits 3.5

  # The linear layers only; the embedding stays Q8_0 (as before 2026-12-07)
  athena-convert MODEL out.gguf --bits 3 --embeddings q8_0

  # One configuration for every layer: d=2, 64 centroids, tiles of 64 rows x all columns
  athena-convert MODEL out.gguf --vq 2,64,64,576

  # A baseline in the same code, for comparison
  athena-convert MODEL gptq-3bit.gguf --bits 3 --method gptq

  # Measure the result right away (ANCHORS.md's setting: wiki text, context 512, 32 chunks)
  athena-convert MODEL out.gguf --bits 3 --eval-text ~/.cache/athena/text/wiki.utf8 --eval-chunks 32

The plan (per-layer configuration and bpw) is printed before quantizing; at the end a table gives
per layer the configuration, bpw and relative layer loss tr(dW H dW^T) / tr(W H W^T), then the
totals, time and peak memory. Check the result with athena-verify.

Exit status: 0 on success, 1 when an input is invalid or the conversion fails (one line naming
the file, tensor or option), 2 for command-line usage errors (an option out of its range, or one
the chosen mode would ignore), 130 when interrupted (Ctrl-C or SIGTERM; the temp file is
removed).";
