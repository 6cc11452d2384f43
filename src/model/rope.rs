//! Rotary position embedding in the HF layout (`rotate_half`: the first and second half of each
//! head are the two coordinates of a pair), with linear and llama3 frequency scaling.

use crate::checkpoint::ModelConfig;
use candle_core::{Device, Result, Tensor, D};

/// Per-pair rotation frequencies of one head, after any `rope_scaling`.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(config: &ModelConfig) -> Self {
        let dim = config.head_dim;
        let base = config.rope_theta;
        let mut inv_freq: Vec<f64> = (0..dim / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f64 / dim as f64))
            .collect();
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
                // Config parsing rejects other types.
                _ => {}
            }
        }
        Rope {
            inv_freq: inv_freq.into_iter().map(|f| f as f32).collect(),
        }
    }

    /// The frequencies (one per rotated pair).
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// `(cos, sin)` tables of shape `[seq_len, head_dim]` for positions `0..seq_len`.
    pub fn tables(&self, seq_len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(seq_len * half * 2);
        let mut sin = Vec::with_capacity(seq_len * half * 2);
        for p in 0..seq_len {
            for _ in 0..2 {
                for &f in &self.inv_freq {
                    let angle = p as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        Ok((
            Tensor::from_vec(cos, (seq_len, 2 * half), device)?,
            Tensor::from_vec(sin, (seq_len, 2 * half), device)?,
        ))
    }
}

/// Rotates `x` of shape `[heads, seq, head_dim]` with tables from [`Rope::tables`].
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)?.add(&rotated.broadcast_mul(sin)?)
}
