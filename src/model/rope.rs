//! Rotary position embedding in the HF layout (`rotate_half`: the first and second half of the
//! rotated dimensions are the two coordinates of a pair), with linear, llama3 and longrope
//! frequency scaling, partial rotary (Phi-3 rotates the first `rotary_dim` dimensions of a head)
//! and Gemma 3's local layers (their own base, no scaling).

use crate::checkpoint::ModelConfig;
use candle_core::{Device, Result, Tensor, D};

/// Per-pair rotation frequencies of one head, after any `rope_scaling`.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    /// longrope: the frequencies of contexts longer than `.0` (the original context).
    long: Option<(usize, Vec<f32>)>,
    /// longrope's attention factor: cos and sin are multiplied by it.
    scale: f32,
}

/// `1 / base^(2i / dim)` for the pairs of `dim` rotated dimensions.
fn base_frequencies(base: f64, dim: usize) -> Vec<f64> {
    (0..dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f64 / dim as f64))
        .collect()
}

fn to_f32(x: Vec<f64>) -> Vec<f32> {
    x.into_iter().map(|f| f as f32).collect()
}

impl Rope {
    /// The RoPE of block `layer`: Gemma 3's sliding-window layers rotate with their own base
    /// and no scaling, every other layer as [`Rope::new`].
    pub fn for_layer(config: &ModelConfig, layer: usize) -> Self {
        match &config.local_attention {
            Some(local) if config.is_local(layer) => Rope {
                inv_freq: to_f32(base_frequencies(local.rope_theta, config.rotary_dim)),
                long: None,
                scale: 1.0,
            },
            _ => Self::new(config),
        }
    }

    /// The RoPE of the model's global-attention layers.
    pub fn new(config: &ModelConfig) -> Self {
        let dim = config.rotary_dim;
        let base = config.rope_theta;
        let mut inv_freq = base_frequencies(base, dim);
        let (mut long, mut scale) = (None, 1.0);
        if let Some(s) = &config.rope_scaling {
            match s.rope_type.as_str() {
                "linear" => inv_freq.iter_mut().for_each(|f| *f /= s.factor),
                "llama3" => {
                    // HF `_compute_llama3_parameters`; config parsing ensured the fields exist.
                    let low = s.low_freq_factor.unwrap_or(1.0);
                    let high = s.high_freq_factor.unwrap_or(4.0);
                    let old_ctx = s.original_max_position_embeddings.unwrap_or(8192) as f64;
                    let low_wavelen = old_ctx / low;
                    let high_wavelen = old_ctx / high;
                    for f in inv_freq.iter_mut() {
                        let wavelen = 2.0 * std::f64::consts::PI / *f;
                        if wavelen > low_wavelen {
                            *f /= s.factor;
                        } else if wavelen >= high_wavelen {
                            let smooth = (old_ctx / wavelen - low) / (high - low);
                            *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
                        }
                    }
                }
                crate::checkpoint::config::FREQUENCY_FACTORS => {
                    let factors = s.short_factor.as_deref().unwrap_or(&[]);
                    for (f, d) in inv_freq.iter_mut().zip(factors) {
                        *f /= d;
                    }
                }
                "longrope" => {
                    // HF `_compute_longrope_parameters`; config parsing checked the lists.
                    let divide = |factors: &Option<Vec<f64>>| -> Vec<f64> {
                        let ones = vec![1.0; inv_freq.len()];
                        let factors = factors.as_ref().unwrap_or(&ones);
                        inv_freq.iter().zip(factors).map(|(f, d)| f / d).collect()
                    };
                    let original = s.original_max_position_embeddings.unwrap_or(usize::MAX);
                    long = Some((original, to_f32(divide(&s.long_factor))));
                    scale = s.attention_factor.unwrap_or(1.0) as f32;
                    inv_freq = divide(&s.short_factor);
                }
                // Config parsing rejects other types.
                _ => {}
            }
        }
        Rope {
            inv_freq: to_f32(inv_freq),
            long,
            scale,
        }
    }

    /// The frequencies (one per rotated pair) of contexts up to the original length.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// `(cos, sin)` tables of shape `[seq_len, rotary_dim]` for positions `0..seq_len` (longrope
    /// picks its frequencies by `seq_len`, as HF's dynamic update does).
    pub fn tables(&self, seq_len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let inv_freq = match &self.long {
            Some((original, long)) if seq_len > *original => long,
            _ => &self.inv_freq,
        };
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(seq_len * half * 2);
        let mut sin = Vec::with_capacity(seq_len * half * 2);
        for p in 0..seq_len {
            for _ in 0..2 {
                for &f in inv_freq {
                    let angle = p as f32 * f;
                    cos.push(angle.cos() * self.scale);
                    sin.push(angle.sin() * self.scale);
                }
            }
        }
        Ok((
            Tensor::from_vec(cos, (seq_len, 2 * half), device)?,
            Tensor::from_vec(sin, (seq_len, 2 * half), device)?,
        ))
    }
}

/// Rotates `x` of shape `[heads, seq, head_dim]` with tables from [`Rope::tables`]; with tables
/// narrower than the head (partial rotary) the dimensions past them pass unchanged.
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (dim, rotary) = (x.dim(D::Minus1)?, cos.dim(D::Minus1)?);
    if rotary < dim {
        let rotated = apply(&x.narrow(D::Minus1, 0, rotary)?, cos, sin)?;
        return Tensor::cat(
            &[&rotated, &x.narrow(D::Minus1, rotary, dim - rotary)?],
            D::Minus1,
        );
    }
    let half = dim / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)?.add(&rotated.broadcast_mul(sin)?)
}
