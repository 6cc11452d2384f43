//! One llama-family decoder block: RMSNorm, GQA self-attention with RoPE and a causal mask,
//! RMSNorm, SwiGLU MLP, each with a residual connection; with the family options of
//! [`crate::checkpoint::Architecture`]: q/k norms (qwen3, gemma3), Gemma 3's norms around the
//! attention and MLP outputs, `1 + weight` norms, GeGLU and its sliding window; partial rotary
//! (phi3).

use super::{rope, LinearObserver, ModelError};
use crate::checkpoint::{Activation, DenseTensor, ModelConfig, TensorSource};
use candle_core::{DType, Device, Result, Tensor, D};

/// The seven linear layers of a block, in the order the block runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinearKind {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl LinearKind {
    pub const ALL: [LinearKind; 7] = [
        LinearKind::Q,
        LinearKind::K,
        LinearKind::V,
        LinearKind::O,
        LinearKind::Gate,
        LinearKind::Up,
        LinearKind::Down,
    ];

    /// The name inside a block, e.g. `self_attn.q_proj`.
    pub fn suffix(self) -> &'static str {
        match self {
            LinearKind::Q => "self_attn.q_proj",
            LinearKind::K => "self_attn.k_proj",
            LinearKind::V => "self_attn.v_proj",
            LinearKind::O => "self_attn.o_proj",
            LinearKind::Gate => "mlp.gate_proj",
            LinearKind::Up => "mlp.up_proj",
            LinearKind::Down => "mlp.down_proj",
        }
    }

    /// The full HF module name in block `layer`, e.g. `model.layers.0.self_attn.q_proj`.
    pub fn hf_name(self, layer: usize) -> String {
        format!("model.layers.{layer}.{}", self.suffix())
    }

    /// `[out, in]` of this layer's weight.
    pub fn shape(self, c: &ModelConfig) -> [usize; 2] {
        let q = c.num_attention_heads * c.head_dim;
        let kv = c.num_key_value_heads * c.head_dim;
        match self {
            LinearKind::Q => [q, c.hidden_size],
            LinearKind::K | LinearKind::V => [kv, c.hidden_size],
            LinearKind::O => [c.hidden_size, q],
            LinearKind::Gate | LinearKind::Up => [c.intermediate_size, c.hidden_size],
            LinearKind::Down => [c.hidden_size, c.intermediate_size],
        }
    }
}

/// A linear layer `y = x W^T + b` with `W` of shape `[out, in]` (HF layout).
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// `x`: `[tokens, in]` -> `[tokens, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// The weights of decoder block `layer`, on one device.
#[derive(Debug, Clone)]
pub struct Block {
    pub layer: usize,
    /// The attention's input norm (`input_layernorm`), HF values (Gemma: the offset from 1).
    pub input_layernorm: Tensor,
    /// The MLP's input norm: `post_attention_layernorm`, or Gemma's `pre_feedforward_layernorm`.
    pub mlp_norm: Tensor,
    /// Per-head norms of q and k (qwen3, gemma3).
    qk_norms: Option<(Tensor, Tensor)>,
    /// Gemma 3: the norms of the attention output and of the MLP output.
    output_norms: Option<(Tensor, Tensor)>,
    linears: [Linear; 7],
}

/// Copies a checkpoint tensor to the device.
pub fn to_device(t: DenseTensor, device: &Device) -> Result<Tensor> {
    Tensor::from_vec(t.data, t.shape, device)
}

impl Block {
    /// Reads block `layer`'s weights from the source (one tensor at a time).
    pub fn load(
        source: &dyn TensorSource,
        layer: usize,
        device: &Device,
    ) -> std::result::Result<Self, ModelError> {
        let config = source.config();
        let load = |name: String| -> std::result::Result<Tensor, ModelError> {
            Ok(to_device(source.load(&name)?, device)?)
        };
        let p = format!("model.layers.{layer}");
        let mut linears = Vec::with_capacity(7);
        for kind in LinearKind::ALL {
            let name = kind.hf_name(layer);
            let weight = load(format!("{name}.weight"))?;
            check_shape(&name, &weight, &kind.shape(config))?;
            let has_bias = config.attention_bias
                && matches!(kind, LinearKind::Q | LinearKind::K | LinearKind::V);
            let bias = if has_bias {
                Some(load(format!("{name}.bias"))?)
            } else {
                None
            };
            linears.push(Linear { weight, bias });
        }
        let arch = config.architecture;
        let qk_norms = if arch.qk_norm() {
            Some((
                load(format!("{p}.self_attn.q_norm.weight"))?,
                load(format!("{p}.self_attn.k_norm.weight"))?,
            ))
        } else {
            None
        };
        let (mlp_norm, output_norms) = if arch.sandwich_norms() {
            (
                load(format!("{p}.pre_feedforward_layernorm.weight"))?,
                Some((
                    load(format!("{p}.post_attention_layernorm.weight"))?,
                    load(format!("{p}.post_feedforward_layernorm.weight"))?,
                )),
            )
        } else {
            (load(format!("{p}.post_attention_layernorm.weight"))?, None)
        };
        Ok(Block {
            layer,
            input_layernorm: load(format!("{p}.input_layernorm.weight"))?,
            mlp_norm,
            qk_norms,
            output_norms,
            linears: linears.try_into().expect("seven linears"),
        })
    }

    pub fn linear(&self, kind: LinearKind) -> &Linear {
        &self.linears[kind as usize]
    }

    /// Replaces one layer's weight (e.g. by its quantized version); the shape must not change.
    pub fn set_weight(
        &mut self,
        kind: LinearKind,
        weight: Tensor,
    ) -> std::result::Result<(), ModelError> {
        let old = &self.linears[kind as usize].weight;
        if weight.dims() != old.dims() {
            return Err(ModelError::Invalid(format!(
                "{}: replacement weight has shape {:?}, expected {:?}",
                kind.hf_name(self.layer),
                weight.dims(),
                old.dims()
            )));
        }
        let weight = weight.to_device(old.device())?.to_dtype(DType::F32)?;
        self.linears[kind as usize].weight = weight;
        Ok(())
    }

    /// Replaces one layer's weight by a quantized layer's reconstruction, given in the GGUF row
    /// order it is stored in (`qk_heads`: the heads of llama's q/k row permutation, if any).
    pub fn set_stored_weight(
        &mut self,
        kind: LinearKind,
        stored: &[f32],
        qk_heads: Option<usize>,
    ) -> std::result::Result<(), ModelError> {
        let dims = self.linears[kind as usize].weight.dims2()?;
        let w = match qk_heads {
            Some(n_head) => crate::checkpoint::names::unpermute_qk(stored, dims.0, dims.1, n_head)
                .map_err(|e| ModelError::Invalid(e.to_string()))?,
            None => stored.to_vec(),
        };
        let device = self.linears[kind as usize].weight.device().clone();
        self.set_weight(kind, Tensor::from_vec(w, dims, &device)?)
    }

    /// Runs the block on one sequence `x` of shape `[seq, hidden]` (positions `0..seq`).
    /// `cos`/`sin` are RoPE tables with at least `seq` rows; `observer` sees every linear input.
    pub fn forward(
        &self,
        config: &ModelConfig,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mut observer: Option<&mut dyn LinearObserver>,
    ) -> Result<Tensor> {
        let (seq, _) = x.dims2()?;
        let layer = self.layer;
        let observe = |observer: &mut Option<&mut dyn LinearObserver>,
                       kind: LinearKind,
                       input: &Tensor|
         -> Result<()> {
            match observer.as_deref_mut() {
                Some(o) => o.observe(&kind.hf_name(layer), input),
                None => Ok(()),
            }
        };
        let eps = config.rms_norm_eps;
        let arch = config.architecture;
        let norm = |x: &Tensor, w: &Tensor| -> Result<Tensor> {
            if arch.norm_adds_one() {
                rms_norm(x, &(w + 1.0)?, eps)
            } else {
                rms_norm(x, w, eps)
            }
        };
        let (nh, nkv, hd) = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        );

        // Attention.
        let h = norm(x, &self.input_layernorm)?;
        for kind in [LinearKind::Q, LinearKind::K, LinearKind::V] {
            observe(&mut observer, kind, &h)?;
        }
        let heads = |t: Tensor, n: usize| -> Result<Tensor> {
            t.reshape((seq, n, hd))?.transpose(0, 1)?.contiguous()
        };
        let mut q = heads(self.linear(LinearKind::Q).forward(&h)?, nh)?;
        let mut k = heads(self.linear(LinearKind::K).forward(&h)?, nkv)?;
        let v = heads(self.linear(LinearKind::V).forward(&h)?, nkv)?;
        if let Some((q_norm, k_norm)) = &self.qk_norms {
            q = norm(&q, q_norm)?;
            k = norm(&k, k_norm)?;
        }
        let cos = cos.narrow(0, 0, seq)?;
        let sin = sin.narrow(0, 0, seq)?;
        let q = rope::apply(&q, &cos, &sin)?;
        let k = rope::apply(&k, &cos, &sin)?;
        if let Some(o) = observer.as_deref_mut().filter(|o| o.wants_attention_rows()) {
            o.observe_attention_rows(layer, &q, &k, &cos, &sin)?;
        }
        let (k, v) = if nh != nkv {
            let groups = nh / nkv;
            let repeat = |t: Tensor| -> Result<Tensor> {
                t.unsqueeze(1)?
                    .expand((nkv, groups, seq, hd))?
                    .reshape((nh, seq, hd))
            };
            (repeat(k)?, repeat(v)?)
        } else {
            (k, v)
        };
        let window = config
            .local_attention
            .as_ref()
            .filter(|_| config.is_local(layer))
            .map(|l| l.window);
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let scores = scores.broadcast_add(&causal_mask(seq, window, x.device())?)?;
        let probs = softmax_last(&scores)?;
        if let Some(o) = observer.as_deref_mut().filter(|o| o.wants_value_mix()) {
            let mean_probs = probs.reshape((nkv, nh / nkv, seq, seq))?.mean(1)?;
            let mixed = mean_probs.matmul(
                &h.unsqueeze(0)?
                    .broadcast_as((nkv, seq, h.dim(1)?))?
                    .contiguous()?,
            )?;
            o.observe_value_mix(&LinearKind::V.hf_name(self.layer), &mixed)?;
        }
        let attn = probs
            .matmul(&v.contiguous()?)?
            .transpose(0, 1)?
            .reshape((seq, nh * hd))?;
        observe(&mut observer, LinearKind::O, &attn)?;
        let mut out = self.linear(LinearKind::O).forward(&attn)?;
        if let Some((attn_post, _)) = &self.output_norms {
            out = norm(&out, attn_post)?;
        }
        let x = (x + out)?;

        // MLP.
        let h = norm(&x, &self.mlp_norm)?;
        observe(&mut observer, LinearKind::Gate, &h)?;
        observe(&mut observer, LinearKind::Up, &h)?;
        let gate = self.linear(LinearKind::Gate).forward(&h)?;
        let gate = match arch.activation() {
            Activation::Silu => gate.silu()?,
            Activation::GeluTanh => gate.gelu()?,
        };
        let up = self.linear(LinearKind::Up).forward(&h)?;
        let act = (gate * up)?;
        observe(&mut observer, LinearKind::Down, &act)?;
        let mut out = self.linear(LinearKind::Down).forward(&act)?;
        if let Some((_, ffn_post)) = &self.output_norms {
            out = norm(&out, ffn_post)?;
        }
        x + out
    }
}

fn check_shape(name: &str, t: &Tensor, expected: &[usize]) -> std::result::Result<(), ModelError> {
    if t.dims() != expected {
        return Err(ModelError::Invalid(format!(
            "{name}: weight has shape {:?}, expected {:?}",
            t.dims(),
            expected
        )));
    }
    Ok(())
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x^2) + eps) * weight`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let mean_sq = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (mean_sq + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.broadcast_mul(weight)
}

/// Numerically stable softmax over the last dimension.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&sum)
}

/// `[seq, seq]`: 0 where a query may attend (key position <= query position, and within the
/// last `window` positions when given), -inf elsewhere.
fn causal_mask(seq: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let window = window.unwrap_or(usize::MAX);
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| {
            (0..seq).map(move |j| {
                if j <= i && i - j < window {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (seq, seq), device)
}
