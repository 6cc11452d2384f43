//! Tensor names and layouts: Hugging Face <-> llama.cpp GGUF (llama, mistral, qwen2, qwen3,
//! gemma3, phi3).
//!
//! | HF name                                          | GGUF name              |
//! |--------------------------------------------------|------------------------|
//! | `model.embed_tokens.weight`                      | `token_embd.weight`    |
//! | `model.norm.weight`                              | `output_norm.weight`   |
//! | `lm_head.weight`                                 | `output.weight`        |
//! | `model.layers.N.input_layernorm.weight`          | `blk.N.attn_norm.weight` |
//! | `model.layers.N.self_attn.{q,k,v}_proj.{weight,bias}` | `blk.N.attn_{q,k,v}.{weight,bias}` |
//! | `model.layers.N.self_attn.o_proj.weight`         | `blk.N.attn_output.weight` |
//! | `model.layers.N.post_attention_layernorm.weight` | `blk.N.ffn_norm.weight` |
//! | `model.layers.N.mlp.{gate,up,down}_proj.weight`  | `blk.N.ffn_{gate,up,down}.weight` |
//! | `model.layers.N.self_attn.{q,k}_norm.weight` (qwen3, gemma3) | `blk.N.attn_{q,k}_norm.weight` |
//!
//! Gemma 3 has four norms per block: `input_layernorm` -> `attn_norm`, `post_attention_layernorm`
//! -> `post_attention_norm` (on the attention output), `pre_feedforward_layernorm` -> `ffn_norm`,
//! `post_feedforward_layernorm` -> `post_ffw_norm`. Phi-3's fused `qkv_proj` and `gate_up_proj`
//! are split by the HF reader and named as llama's here; the plain export fuses gate and up back
//! into phi3's `ffn_up` (see `export`).
//!
//! Layout: a GGUF tensor lists its dims innermost first (`ne[0]` is the row length), so an HF
//! linear weight `[out, in]` is stored with dims `[in, out]`; the bytes are the same row-major
//! order. For the llama architecture (which llama.cpp also uses for mistral), llama.cpp's
//! `convert_hf_to_gguf.py` additionally permutes the rows of `q_proj` and `k_proj` (and their
//! biases, if any) from HF's "rotate half" RoPE layout to the interleaved one:
//! `w.reshape(n_head, 2, head_dim / 2, in).swapaxes(1, 2).reshape(w.shape)`, with `n_head` the
//! number of query heads for q and of key/value heads for k. The other families are not permuted
//! (llama.cpp runs them with NeoX-style RoPE).

use super::Architecture;

/// Per-layer tensors: (HF suffix after `model.layers.N.`, GGUF suffix after `blk.N.`).
const LAYER_NAMES: &[(&str, &str)] = &[
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
];

/// Families whose blocks differ from llama's: their names come first (and replace llama's entry
/// for the same HF name).
const QK_NORM_NAMES: &[(&str, &str)] = &[
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
];
const GEMMA3_NAMES: &[(&str, &str)] = &[
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
    (
        "post_attention_layernorm.weight",
        "post_attention_norm.weight",
    ),
    ("pre_feedforward_layernorm.weight", "ffn_norm.weight"),
    ("post_feedforward_layernorm.weight", "post_ffw_norm.weight"),
];

/// The per-layer (HF, GGUF) suffixes of an architecture.
fn layer_names(arch: Architecture) -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    let family: &[(&str, &str)] = match arch {
        Architecture::Gemma3 => GEMMA3_NAMES,
        Architecture::Qwen3 => QK_NORM_NAMES,
        _ => &[],
    };
    family.iter().chain(
        LAYER_NAMES
            .iter()
            .filter(move |(h, g)| !family.iter().any(|(fh, fg)| fh == h || fg == g)),
    )
}

/// Whole-model tensors: (HF name, GGUF name).
const GLOBAL_NAMES: &[(&str, &str)] = &[
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// GGUF name of an HF tensor, or `None` if the name is not one of the mapped tensors.
pub fn hf_to_gguf(arch: Architecture, hf: &str) -> Option<String> {
    if let Some(&(_, g)) = GLOBAL_NAMES.iter().find(|(h, _)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, suffix) = split_layer(rest)?;
    let &(_, g) = layer_names(arch).find(|(h, _)| *h == suffix)?;
    Some(format!("blk.{layer}.{g}"))
}

/// HF name of a GGUF tensor, or `None` if the name is not one of the mapped tensors
/// (e.g. llama3's `rope_freqs.weight`, which has no HF counterpart).
pub fn gguf_to_hf(arch: Architecture, gguf: &str) -> Option<String> {
    if let Some(&(h, _)) = GLOBAL_NAMES.iter().find(|(_, g)| *g == gguf) {
        return Some(h.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, suffix) = split_layer(rest)?;
    let &(h, _) = layer_names(arch).find(|(_, g)| *g == suffix)?;
    Some(format!("model.layers.{layer}.{h}"))
}

/// Splits `"12.rest"` into `(12, "rest")`; rejects leading zeros so the mapping is one to one.
fn split_layer(s: &str) -> Option<(usize, &str)> {
    let (num, suffix) = s.split_once('.')?;
    if num.is_empty() || (num.len() > 1 && num.starts_with('0')) {
        return None;
    }
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((num.parse().ok()?, suffix))
}

/// Which llama RoPE permutation an HF tensor gets, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkRole {
    /// `q_proj` weight or bias: permuted with the number of attention heads.
    Query,
    /// `k_proj` weight or bias: permuted with the number of key/value heads.
    Key,
}

/// The role of an HF tensor in the q/k permutation (`None` for every other tensor).
/// Whether the permutation applies at all depends on the architecture (llama/mistral only).
pub fn qk_role(hf: &str) -> Option<QkRole> {
    let rest = hf.strip_prefix("model.layers.")?;
    let (_, suffix) = split_layer(rest)?;
    match suffix {
        "self_attn.q_proj.weight" | "self_attn.q_proj.bias" => Some(QkRole::Query),
        "self_attn.k_proj.weight" | "self_attn.k_proj.bias" => Some(QkRole::Key),
        _ => None,
    }
}

/// Errors from the row permutation: the shape does not split into heads of even size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermuteError {
    #[error("data length {len} is not rows ({rows}) x cols ({cols})")]
    Length {
        len: usize,
        rows: usize,
        cols: usize,
    },
    #[error("{rows} rows do not split into {n_head} heads of even size")]
    Heads { rows: usize, n_head: usize },
}

/// HF -> GGUF: permutes the rows of a row-major `[rows, cols]` matrix (a bias is `cols == 1`)
/// as llama.cpp's converter does for llama q/k projections.
pub fn permute_qk(
    data: &[f32],
    rows: usize,
    cols: usize,
    n_head: usize,
) -> Result<Vec<f32>, PermuteError> {
    reorder_rows(data, rows, cols, n_head, true)
}

/// GGUF -> HF: the inverse of [`permute_qk`].
pub fn unpermute_qk(
    data: &[f32],
    rows: usize,
    cols: usize,
    n_head: usize,
) -> Result<Vec<f32>, PermuteError> {
    reorder_rows(data, rows, cols, n_head, false)
}

/// Row `h*hd + i*(hd/2) + j` of the HF layout is row `h*hd + j*2 + i` of the GGUF layout
/// (`h` head, `i` in 0..2 the rotary half, `j` in 0..hd/2 the pair index).
fn reorder_rows(
    data: &[f32],
    rows: usize,
    cols: usize,
    n_head: usize,
    to_gguf: bool,
) -> Result<Vec<f32>, PermuteError> {
    if rows.checked_mul(cols) != Some(data.len()) {
        return Err(PermuteError::Length {
            len: data.len(),
            rows,
            cols,
        });
    }
    if n_head == 0 || !rows.is_multiple_of(n_head) || !(rows / n_head).is_multiple_of(2) {
        return Err(PermuteError::Heads { rows, n_head });
    }
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![0.0f32; data.len()];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..half {
                let hf_row = h * head_dim + i * half + j;
                let gguf_row = h * head_dim + j * 2 + i;
                let (src, dst) = if to_gguf {
                    (hf_row, gguf_row)
                } else {
                    (gguf_row, hf_row)
                };
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let hf = [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
            "model.layers.0.input_layernorm.weight",
            "model.layers.7.self_attn.q_proj.weight",
            "model.layers.7.self_attn.q_proj.bias",
            "model.layers.7.self_attn.k_proj.weight",
            "model.layers.7.self_attn.k_proj.bias",
            "model.layers.7.self_attn.v_proj.weight",
            "model.layers.7.self_attn.v_proj.bias",
            "model.layers.29.self_attn.o_proj.weight",
            "model.layers.29.post_attention_layernorm.weight",
            "model.layers.3.mlp.gate_proj.weight",
            "model.layers.3.mlp.up_proj.weight",
            "model.layers.3.mlp.down_proj.weight",
        ];
        let qk_norms = [
            "model.layers.2.self_attn.q_norm.weight",
            "model.layers.2.self_attn.k_norm.weight",
        ];
        let gemma_norms = [
            "model.layers.5.pre_feedforward_layernorm.weight",
            "model.layers.5.post_feedforward_layernorm.weight",
        ];
        for arch in [
            Architecture::Llama,
            Architecture::Qwen2,
            Architecture::Qwen3,
            Architecture::Gemma3,
            Architecture::Phi3,
        ] {
            let extra: &[&str] = match arch {
                Architecture::Qwen3 => &qk_norms,
                Architecture::Gemma3 => &[qk_norms, gemma_norms].concat().leak()[..],
                _ => &[],
            };
            for &name in hf.iter().chain(extra) {
                let g = hf_to_gguf(arch, name).unwrap_or_else(|| panic!("{name} unmapped"));
                assert_eq!(gguf_to_hf(arch, &g).as_deref(), Some(name), "via {g}");
            }
        }
        let a = Architecture::Llama;
        assert_eq!(
            hf_to_gguf(a, "model.layers.12.self_attn.o_proj.weight").as_deref(),
            Some("blk.12.attn_output.weight")
        );
        assert_eq!(
            gguf_to_hf(a, "blk.3.ffn_down.weight").as_deref(),
            Some("model.layers.3.mlp.down_proj.weight")
        );
        assert_eq!(
            gguf_to_hf(a, "token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(
            hf_to_gguf(a, "model.layers.0.self_attn.q_norm.weight"),
            None
        );
    }

    /// Gemma 3's four block norms land where llama.cpp's gemma3 loader looks for them.
    #[test]
    fn gemma3_norms() {
        let g = |hf: &str| hf_to_gguf(Architecture::Gemma3, hf).unwrap();
        assert_eq!(
            g("model.layers.1.input_layernorm.weight"),
            "blk.1.attn_norm.weight"
        );
        assert_eq!(
            g("model.layers.1.post_attention_layernorm.weight"),
            "blk.1.post_attention_norm.weight"
        );
        assert_eq!(
            g("model.layers.1.pre_feedforward_layernorm.weight"),
            "blk.1.ffn_norm.weight"
        );
        assert_eq!(
            g("model.layers.1.post_feedforward_layernorm.weight"),
            "blk.1.post_ffw_norm.weight"
        );
        assert_eq!(
            g("model.layers.1.self_attn.k_norm.weight"),
            "blk.1.attn_k_norm.weight"
        );
    }

    #[test]
    fn unknown_names_are_none() {
        for g in [
            "rope_freqs.weight",
            "blk.x.attn_q.weight",
            "blk.01.attn_q.weight",
            "blk.1.attn_q",
            "blk..attn_q.weight",
        ] {
            assert_eq!(gguf_to_hf(Architecture::Llama, g), None, "{g}");
        }
        for h in [
            "model.layers.1.self_attn.rotary_emb.inv_freq",
            "model.layers.a.mlp.up_proj.weight",
        ] {
            assert_eq!(hf_to_gguf(Architecture::Llama, h), None, "{h}");
        }
    }

    #[test]
    fn qk_roles() {
        assert_eq!(
            qk_role("model.layers.0.self_attn.q_proj.weight"),
            Some(QkRole::Query)
        );
        assert_eq!(
            qk_role("model.layers.0.self_attn.k_proj.bias"),
            Some(QkRole::Key)
        );
        assert_eq!(qk_role("model.layers.0.self_attn.v_proj.weight"), None);
        assert_eq!(qk_role("lm_head.weight"), None);
    }

    /// One head of dim 4, one column: HF rows [a0 a1 | b0 b1] (rotary halves) become the
    /// interleaved pairs [a0 b0 a1 b1], exactly what numpy's reshape(1, 2, 2, 1).swapaxes(1, 2) gives.
    #[test]
    fn permute_known_example() {
        let hf = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(permute_qk(&hf, 4, 1, 1).unwrap(), vec![0.0, 2.0, 1.0, 3.0]);
        // Two heads of dim 4, two columns: rows move whole, per head.
        let hf: Vec<f32> = (0..16).map(|x| x as f32).collect();
        let g = permute_qk(&hf, 8, 2, 2).unwrap();
        let rows: Vec<f32> = g.chunks(2).map(|r| r[0] / 2.0).collect();
        assert_eq!(rows, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(g[1], 1.0);
    }

    /// numpy: np.arange(6*2).reshape(6, 2).reshape(1, 2, 3, 2).swapaxes(1, 2).reshape(6, 2)[:, 0] / 2
    /// == [0, 3, 1, 4, 2, 5].
    #[test]
    fn permute_head_dim_six() {
        let hf: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let g = permute_qk(&hf, 6, 2, 1).unwrap();
        let rows: Vec<f32> = g.chunks(2).map(|r| r[0] / 2.0).collect();
        assert_eq!(rows, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn unpermute_inverts_permute() {
        for (n_head, head_dim, cols) in [(1, 2, 1), (3, 64, 5), (9, 64, 3), (2, 10, 7)] {
            let rows = n_head * head_dim;
            let x: Vec<f32> = (0..rows * cols).map(|i| (i as f32).sin()).collect();
            let p = permute_qk(&x, rows, cols, n_head).unwrap();
            if head_dim > 2 {
                assert_ne!(p, x, "permutation should move rows for head_dim {head_dim}");
            }
            assert_eq!(unpermute_qk(&p, rows, cols, n_head).unwrap(), x);
            assert_eq!(
                permute_qk(
                    &unpermute_qk(&x, rows, cols, n_head).unwrap(),
                    rows,
                    cols,
                    n_head
                )
                .unwrap(),
                x
            );
        }
    }

    #[test]
    fn permute_rejects_bad_shapes() {
        assert!(matches!(
            permute_qk(&[0.0; 6], 6, 1, 2),
            Err(PermuteError::Heads { .. })
        ));
        assert!(matches!(
            permute_qk(&[0.0; 5], 6, 1, 3),
            Err(PermuteError::Length { .. })
        ));
        assert!(matches!(
            permute_qk(&[], 0, 1, 0),
            Err(PermuteError::Heads { .. })
        ));
    }
}
