//! The llama-family decoder (llama, mistral, qwen2, qwen3, gemma3, phi3), read top to bottom like
//! llama2.c's run.c: embed, then per layer RMSNorm -> q/k/v -> RoPE -> causal attention over the
//! KV cache -> output projection -> residual, RMSNorm -> SwiGLU MLP -> residual; final RMSNorm
//! and the output head. The families add: q/k RMSNorm per head (qwen3, gemma3); Gemma 3's
//! sqrt(width) embedding scale, norms on the attention and MLP outputs, GeGLU and sliding-window
//! layers with their own RoPE base; Phi-3's fused q/k/v and gate/up weights, partial rotary and
//! longrope; llama3's RoPE frequency factors. Every weight product goes through [`Matrix`], so
//! Athena and plain weights run the same forward; a batch of tokens (a prompt) runs as one
//! matrix product per weight.

use athena_gguf::athena::{stored_weight, stored_weights};
use athena_gguf::{GgmlType, GgufFile};
use rayon::prelude::*;

use crate::config::{Arch, Config};
use crate::kv_cache::KvCache;
use crate::matrix::{AthenaMatrix, Matrix, OutPtr, PlainMatrix, PlainType};
use crate::RuntimeError;

pub struct Layer<'a> {
    attn_norm: Vec<f32>,
    /// q, k, v (`attn_q`, `attn_k`, `attn_v`, or Phi-3's fused `attn_qkv`).
    qkv: Projections<'a>,
    /// q, k and v biases (qwen2).
    bias: Option<[Vec<f32>; 3]>,
    /// Per-head RMSNorm weights of q and k (qwen3, gemma3).
    qk_norm: Option<[Vec<f32>; 2]>,
    wo: Matrix<'a>,
    /// Gemma 3: norms of the attention output and of the MLP output.
    post_norms: Option<[Vec<f32>; 2]>,
    ffn_norm: Vec<f32>,
    /// gate and up (`ffn_gate`, `ffn_up`, or Phi-3's fused `ffn_up` of twice the rows).
    gate_up: Projections<'a>,
    w_down: Matrix<'a>,
}

/// Weights that multiply the same input: separate, or stacked by rows into one tensor whose
/// output splits in the same order.
enum Projections<'a> {
    Split(Vec<Matrix<'a>>),
    Fused(Box<Matrix<'a>>),
}

impl Projections<'_> {
    /// `ys[i] = x W_i^T` for each part, `x` holding `t` rows.
    fn matmul(&self, x: &[f32], t: usize, ys: &mut [&mut [f32]]) {
        match self {
            Projections::Split(ws) => {
                let ws: Vec<&Matrix> = ws.iter().collect();
                Matrix::matmul_many(&ws, x, t, ys);
            }
            Projections::Fused(w) => {
                let mut all = vec![0.0f32; t * w.rows()];
                w.matmul(x, t, &mut all);
                let mut at = 0;
                for y in ys.iter_mut() {
                    let width = y.len() / t;
                    for (row, out) in all.chunks_exact(w.rows()).zip(y.chunks_exact_mut(width)) {
                        out.copy_from_slice(&row[at..at + width]);
                    }
                    at += width;
                }
            }
        }
    }
}

pub struct Model<'a> {
    pub config: Config,
    embed: Matrix<'a>,
    layers: Vec<Layer<'a>>,
    norm: Vec<f32>,
    /// None when the output head is tied to the token embedding.
    output: Option<Matrix<'a>>,
}

/// Finds weight matrices and vectors in a file by their llama.cpp names.
struct Loader<'a> {
    file: &'a GgufFile,
    athena: Vec<String>,
}

impl<'a> Loader<'a> {
    fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some() || self.athena.iter().any(|w| w == name)
    }

    /// A weight `rows x cols` (checked against `shape` where given), plain or Athena.
    fn matrix(&self, name: &str, shape: Option<[usize; 2]>) -> Result<Matrix<'a>, RuntimeError> {
        let bad = |problem: String| RuntimeError::Tensor {
            name: name.to_string(),
            problem,
        };
        let m = if let Some(t) = self.file.tensor(name) {
            let ty = match t.ggml_type {
                GgmlType::F32 => PlainType::F32,
                GgmlType::F16 => PlainType::F16,
                GgmlType::BF16 => PlainType::Bf16,
                GgmlType::Q8_0 => PlainType::Q8_0,
                other => {
                    return Err(RuntimeError::UnsupportedType {
                        name: name.to_string(),
                        ty: other.name().to_string(),
                    })
                }
            };
            if t.dims.len() != 2 {
                return Err(bad(format!("{} dimensions, expected 2", t.dims.len())));
            }
            let (cols, rows) = (t.dims[0] as usize, t.dims[1] as usize);
            Matrix::Plain(PlainMatrix::new(ty, rows, cols, self.file.tensor_data(t)))
        } else if self.athena.iter().any(|w| w == name) {
            let w = stored_weight(self.file, name)?;
            // Rule 7 (one pass over the data): finite codebooks and scales, zero padding.
            w.encoded.check().map_err(|e| bad(e.to_string()))?;
            Matrix::Athena(AthenaMatrix::new(&w.encoded))
        } else {
            return Err(RuntimeError::MissingTensor(name.to_string()));
        };
        if let Some([rows, cols]) = shape {
            if (m.rows(), m.cols()) != (rows, cols) {
                return Err(bad(format!(
                    "shape {} x {}, the model's metadata implies {rows} x {cols}",
                    m.rows(),
                    m.cols()
                )));
            }
        }
        Ok(m)
    }

    /// An F32 vector of `len` values (norm weights, biases).
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, RuntimeError> {
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| RuntimeError::MissingTensor(name.to_string()))?;
        if t.ggml_type != GgmlType::F32 || t.n_elements() != len as u64 {
            return Err(RuntimeError::Tensor {
                name: name.to_string(),
                problem: format!(
                    "{} {:?}, expected F32 of {len} values",
                    t.ggml_type.name(),
                    t.dims
                ),
            });
        }
        Ok(self
            .file
            .tensor_data(t)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect())
    }
}

impl<'a> Model<'a> {
    /// Reads the model from a validated GGUF file (Athena weights' keys and components checked
    /// before anything is allocated for them). The weights stay in the file's memory map.
    pub fn load(file: &'a GgufFile) -> Result<Self, RuntimeError> {
        let mut config = Config::from_gguf(file)?;
        let loader = Loader {
            file,
            athena: stored_weights(file)?.into_iter().map(|w| w.name).collect(),
        };
        let c = &config;
        let (d, q, kv, ffn) = (c.dim, c.q_dim(), c.kv_dim(), c.ffn);
        let embed = loader.matrix("token_embd.weight", None)?;
        if embed.cols() != d {
            return Err(RuntimeError::Tensor {
                name: "token_embd.weight".into(),
                problem: format!("{} columns, the model's width is {d}", embed.cols()),
            });
        }
        let mut layers = Vec::with_capacity(c.layers);
        for l in 0..c.layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            let bias = if loader.has(&n("attn_q.bias")) {
                Some([
                    loader.vector(&n("attn_q.bias"), q)?,
                    loader.vector(&n("attn_k.bias"), kv)?,
                    loader.vector(&n("attn_v.bias"), kv)?,
                ])
            } else {
                None
            };
            let qkv = if loader.has(&n("attn_qkv.weight")) {
                Projections::Fused(Box::new(
                    loader.matrix(&n("attn_qkv.weight"), Some([q + 2 * kv, d]))?,
                ))
            } else {
                Projections::Split(vec![
                    loader.matrix(&n("attn_q.weight"), Some([q, d]))?,
                    loader.matrix(&n("attn_k.weight"), Some([kv, d]))?,
                    loader.matrix(&n("attn_v.weight"), Some([kv, d]))?,
                ])
            };
            // llama.cpp's phi3 layout: one ffn_up of gate then up rows, no ffn_gate.
            let gate_up = if c.arch == Arch::Phi3 && !loader.has(&n("ffn_gate.weight")) {
                Projections::Fused(Box::new(
                    loader.matrix(&n("ffn_up.weight"), Some([2 * ffn, d]))?,
                ))
            } else {
                Projections::Split(vec![
                    loader.matrix(&n("ffn_gate.weight"), Some([ffn, d]))?,
                    loader.matrix(&n("ffn_up.weight"), Some([ffn, d]))?,
                ])
            };
            let qk_norm = if matches!(c.arch, Arch::Qwen3 | Arch::Gemma3) {
                Some([
                    loader.vector(&n("attn_q_norm.weight"), c.head_dim)?,
                    loader.vector(&n("attn_k_norm.weight"), c.head_dim)?,
                ])
            } else {
                None
            };
            let post_norms = if c.arch == Arch::Gemma3 {
                Some([
                    loader.vector(&n("post_attention_norm.weight"), d)?,
                    loader.vector(&n("post_ffw_norm.weight"), d)?,
                ])
            } else {
                None
            };
            layers.push(Layer {
                attn_norm: loader.vector(&n("attn_norm.weight"), d)?,
                qkv,
                bias,
                qk_norm,
                wo: loader.matrix(&n("attn_output.weight"), Some([d, q]))?,
                post_norms,
                ffn_norm: loader.vector(&n("ffn_norm.weight"), d)?,
                gate_up,
                w_down: loader.matrix(&n("ffn_down.weight"), Some([d, ffn]))?,
            });
        }
        let output = if loader.has("output.weight") {
            Some(loader.matrix("output.weight", Some([embed.rows(), d]))?)
        } else {
            None
        };
        let norm = loader.vector("output_norm.weight", d)?;
        config.vocab = embed.rows();
        Ok(Model {
            config,
            embed,
            layers,
            norm,
            output,
        })
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self, ty: crate::KvType, ctx: usize) -> KvCache {
        let c = &self.config;
        KvCache::new(ty, c.layers, c.kv_heads, c.head_dim, ctx)
    }

    fn head(&self) -> &Matrix<'a> {
        self.output.as_ref().unwrap_or(&self.embed)
    }

    /// Per rotated pair, the RoPE frequency of the global layers for a cache of `ctx` positions
    /// (longrope switches to its long factors past the original context, as llama.cpp does by
    /// its context size).
    fn rope_freqs(&self, ctx: usize) -> Vec<f32> {
        let c = &self.config;
        let factors = match &c.longrope {
            Some(l) if ctx > l.original_ctx => Some(&l.long),
            Some(l) => Some(&l.short),
            None => c.rope_freq_factors.as_ref(),
        };
        frequencies(c.rope_base, c.rope_dims, factors.map(Vec::as_slice))
    }

    /// Runs `tokens` at the positions after those in `cache` (appending their keys and values)
    /// and returns the logits of tokens `from..` (row-major, `vocab` per token).
    pub fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        from: usize,
    ) -> Result<Vec<f32>, RuntimeError> {
        let c = &self.config;
        let (t, d, pos0) = (tokens.len(), c.dim, cache.len());
        if pos0 + t > cache.ctx() {
            return Err(RuntimeError::ContextFull {
                tokens: pos0 + t,
                ctx: cache.ctx(),
            });
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= c.vocab) {
            return Err(RuntimeError::BadToken { id, vocab: c.vocab });
        }
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());

        let mut x = vec![0.0f32; t * d];
        for (row, &id) in x.chunks_exact_mut(d).zip(tokens) {
            self.embed.row(id as usize, row);
        }
        if c.arch == Arch::Gemma3 {
            let scale = (d as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= scale);
        }
        let mut xb = vec![0.0f32; t * d];
        let mut q = vec![0.0f32; t * q_dim];
        let mut k = vec![0.0f32; t * kv_dim];
        let mut v = vec![0.0f32; t * kv_dim];
        let mut att = vec![0.0f32; t * q_dim];
        let mut gate = vec![0.0f32; t * c.ffn];
        let mut up = vec![0.0f32; t * c.ffn];
        let rope = RopeTable::new(c, &self.rope_freqs(cache.ctx()), pos0, t);
        let local_rope = c.sliding_window.as_ref().map(|s| {
            let freqs = frequencies(s.rope_base, c.rope_dims, None);
            RopeTable::new(c, &freqs, pos0, t)
        });
        let mut tmp = Vec::new();

        for (l, layer) in self.layers.iter().enumerate() {
            // Attention.
            rms_norm(&x, &layer.attn_norm, c.eps, &mut xb);
            layer.qkv.matmul(&xb, t, &mut [&mut q, &mut k, &mut v]);
            if let Some([bq, bk, bv]) = &layer.bias {
                add_rows(&mut q, bq);
                add_rows(&mut k, bk);
                add_rows(&mut v, bv);
            }
            if let Some([q_norm, k_norm]) = &layer.qk_norm {
                for (y, w) in [(&mut q, q_norm), (&mut k, k_norm)] {
                    tmp.clone_from(y);
                    rms_norm(&tmp, w, c.eps, y);
                }
            }
            let window = c.window(l);
            let rope = match (&local_rope, window) {
                (Some(local), Some(_)) => local,
                _ => &rope,
            };
            rope.apply(&mut q, c);
            rope.apply(&mut k, c);
            cache.append(l, &k, &v);
            attention(c, cache, l, pos0, window, &q, &mut att);
            layer.wo.matmul(&att, t, &mut xb);
            if let Some([attn_post, _]) = &layer.post_norms {
                tmp.clone_from(&xb);
                rms_norm(&tmp, attn_post, c.eps, &mut xb);
            }
            add(&mut x, &xb);

            // SwiGLU (GeGLU for gemma3) MLP.
            rms_norm(&x, &layer.ffn_norm, c.eps, &mut xb);
            layer.gate_up.matmul(&xb, t, &mut [&mut gate, &mut up]);
            if c.arch == Arch::Gemma3 {
                for (g, u) in gate.iter_mut().zip(&up) {
                    *g = gelu_tanh(*g) * u;
                }
            } else {
                for (g, u) in gate.iter_mut().zip(&up) {
                    *g = *g / (1.0 + (-*g).exp()) * u;
                }
            }
            layer.w_down.matmul(&gate, t, &mut xb);
            if let Some([_, ffn_post]) = &layer.post_norms {
                tmp.clone_from(&xb);
                rms_norm(&tmp, ffn_post, c.eps, &mut xb);
            }
            add(&mut x, &xb);
        }
        cache.advance(t);

        let rows = t - from.min(t);
        let mut normed = vec![0.0f32; rows * d];
        rms_norm(&x[from.min(t) * d..], &self.norm, c.eps, &mut normed);
        let mut logits = vec![0.0f32; rows * c.vocab];
        if rows == 1 {
            self.head().matvec_f32(&normed, &mut logits);
        } else {
            self.head().matmul(&normed, rows, &mut logits);
        }
        Ok(logits)
    }
}

/// out = x / rms(x) * w, row by row (the sum of squares in f64, as ggml does).
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss: f64 = xr.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let scale = (1.0 / (ss / d as f64 + eps as f64).sqrt()) as f32;
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * scale * g;
        }
    }
}

/// GELU with the tanh approximation (`gelu_pytorch_tanh`, ggml's gelu).
fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh())
}

/// `base^(-2i / dims)` for each rotated pair, divided by its factor when given.
fn frequencies(base: f32, dims: usize, factors: Option<&[f32]>) -> Vec<f32> {
    (0..dims / 2)
        .map(|i| {
            let f = base.powf(-2.0 * i as f32 / dims as f32);
            f / factors.map_or(1.0, |d| d[i])
        })
        .collect()
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

fn add_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add(row, bias);
    }
}

/// cos and sin of every (position, frequency) of one forward call.
struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// The tables of positions `pos0..pos0 + t` for pair frequencies `freqs` (longrope's
    /// attention factor folded into cos and sin).
    fn new(c: &Config, freqs: &[f32], pos0: usize, t: usize) -> Self {
        let half = freqs.len();
        let mscale = c.longrope.as_ref().map_or(1.0, |l| l.attn_factor);
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in pos0..pos0 + t {
            let pos = p as f32 / c.rope_scale;
            for &freq in freqs {
                let (s, co) = (pos * freq).sin_cos();
                cos.push(co * mscale);
                sin.push(s * mscale);
            }
        }
        Self { half, cos, sin }
    }

    /// Rotates the first `rope_dims` dimensions of every head of every row of `x` (rows of
    /// whole heads, one row per position).
    fn apply(&self, x: &mut [f32], c: &Config) {
        let hd = c.head_dim;
        let row_len = x.len() / (self.cos.len() / self.half);
        for (p, row) in x.chunks_exact_mut(row_len).enumerate() {
            let (cos, sin) = (
                &self.cos[p * self.half..(p + 1) * self.half],
                &self.sin[p * self.half..(p + 1) * self.half],
            );
            for head in row.chunks_exact_mut(hd) {
                for i in 0..self.half {
                    let (a, b) = if c.rope_neox {
                        (i, i + self.half)
                    } else {
                        (2 * i, 2 * i + 1)
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos[i] - x1 * sin[i];
                    head[b] = x0 * sin[i] + x1 * cos[i];
                }
            }
        }
    }
}

/// Causal attention of the queries `q` (one row per new position) over the cache of `layer`
/// (over its last `window` positions when given), written to `out`; every (position, head) pair
/// is independent and runs in parallel.
fn attention(
    c: &Config,
    cache: &KvCache,
    layer: usize,
    pos0: usize,
    window: Option<usize>,
    q: &[f32],
    out: &mut [f32],
) {
    let window = window.unwrap_or(usize::MAX);
    let hd = c.head_dim;
    let group = c.heads / c.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let one_head = |scores: &mut Vec<f32>, (i, o): (usize, &mut [f32])| {
        let (tok, head) = (i / c.heads, i % c.heads);
        let kv_head = head / group;
        let pos = pos0 + tok;
        let first = (pos + 1).saturating_sub(window);
        let qh = &q[i * hd..(i + 1) * hd];
        scores.clear();
        scores.extend((first..=pos).map(|p| cache.key_dot(layer, p, kv_head, qh) * scale));
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let mut sum = 0.0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        o.fill(0.0);
        for (p, &s) in scores.iter().enumerate() {
            cache.value_axpy(layer, first + p, kv_head, s / sum, o);
        }
    };
    // One token over a short context is a few thousand multiply-adds per head, less than
    // waking the other threads costs.
    let tokens = out.len() / c.q_dim();
    if tokens * out.len() * (pos0 + tokens) < 1 << 18 {
        let mut scores = Vec::new();
        out.chunks_mut(hd)
            .enumerate()
            .for_each(|p| one_head(&mut scores, p));
    } else if tokens == 1 {
        out.par_chunks_mut(hd)
            .enumerate()
            .for_each_init(Vec::new, one_head);
    } else {
        batched_attention(c, cache, layer, pos0, window, q, out);
    }
}

/// Attention of many new tokens (a prompt) as two matrix products per head: scores = Q K^T
/// (causally masked, softmax by row), out = scores V, with the head's keys and values read from
/// the cache once as f32.
fn batched_attention(
    c: &Config,
    cache: &KvCache,
    layer: usize,
    pos0: usize,
    window: usize,
    q: &[f32],
    out: &mut [f32],
) {
    let (hd, q_dim) = (c.head_dim, c.q_dim());
    let t = out.len() / q_dim;
    let len = pos0 + t;
    let group = c.heads / c.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let dst = OutPtr(out.as_mut_ptr());
    (0..c.heads).into_par_iter().for_each(|head| {
        #[allow(clippy::redundant_locals)]
        let dst = dst;
        let kv_head = head / group;
        let mut k = vec![0.0f32; len * hd];
        let mut v = vec![0.0f32; len * hd];
        cache.read_head(layer, false, kv_head, len, &mut k);
        cache.read_head(layer, true, kv_head, len, &mut v);
        let mut scores = vec![0.0f32; t * len];
        // SAFETY (both products): every pointer, stride and size stays inside the buffers: q is
        // t x q_dim (this head's columns at head * hd), k and v are len x hd, scores t x len,
        // and the output window is this head's hd columns of the t x q_dim output.
        unsafe {
            gemm::gemm(
                t,
                len,
                hd,
                scores.as_mut_ptr(),
                1,
                len as isize,
                false,
                q.as_ptr().add(head * hd),
                1,
                q_dim as isize,
                k.as_ptr(),
                hd as isize,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for (i, row) in scores.chunks_exact_mut(len).enumerate() {
            let visible = pos0 + i + 1;
            let first = visible.saturating_sub(window);
            let seen = &mut row[first..visible];
            let max = seen.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let mut sum = 0.0f32;
            for s in seen.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            for s in seen.iter_mut() {
                *s /= sum;
            }
            row[..first].fill(0.0);
            row[visible..].fill(0.0);
        }
        unsafe {
            gemm::gemm(
                t,
                hd,
                len,
                dst.0.add(head * hd),
                1,
                q_dim as isize,
                false,
                scores.as_ptr(),
                1,
                len as isize,
                v.as_ptr(),
                1,
                hd as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
}
