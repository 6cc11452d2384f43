//! Where the model runs: a llama-family decoder (llama, mistral, qwen2, qwen3, gemma3, phi3)
//! evaluated one block at a time from a [`TensorSource`].
//!
//! The loop that evaluation and calibration share is: embed all sequences, then for each block
//! load its weights, (optionally observe or replace them), run every sequence through it, drop
//! it; finally apply the norm and LM head. Peak memory is one block plus the activations of all
//! sequences, never the whole model. Compute is f32 on the given [`Device`].

pub mod block;
pub mod rope;

pub use block::{Block, Linear, LinearKind};
pub use rope::Rope;

use crate::checkpoint::{CheckpointError, ModelConfig, TensorSource};
use candle_core::{Device, Tensor};

/// Errors from running the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("tensor computation failed: {0}")]
    Compute(#[from] candle_core::Error),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;

/// Sees the input activations of every linear layer as the model runs (for calibration:
/// accumulating `X^T X` Hessians).
pub trait LinearObserver {
    /// `layer` is the HF module name (`model.layers.0.self_attn.q_proj`); `input` is
    /// `[tokens, in_features]` for one sequence. q/k/v (and gate/up) receive the same tensor.
    fn observe(&mut self, layer: &str, input: &Tensor) -> candle_core::Result<()>;

    /// Whether [`LinearObserver::observe_value_mix`] should be called (it costs one attention-
    /// sized matmul per sequence and block, so the forward pass skips it unless asked).
    fn wants_value_mix(&self) -> bool {
        false
    }

    /// BoA's attention-aware input of v_proj (ATHENA-MATH 6): `mixed` is `[kv_heads, tokens,
    /// in_features]`, per kv head `A X` with `A` the attention probabilities averaged over the
    /// query heads that share it. An error dW in that head's rows of v_proj reaches the
    /// attention output as `A X dW^T`, so `(A X)^T (A X)` is the Hessian that matters.
    fn observe_value_mix(&mut self, _layer: &str, _mixed: &Tensor) -> candle_core::Result<()> {
        Ok(())
    }

    /// Whether [`LinearObserver::observe_attention_rows`] should be called.
    fn wants_attention_rows(&self) -> bool {
        false
    }

    /// BoA's row side of q_proj and k_proj (ATHENA-MATH 6): block `layer`'s queries `q`
    /// (`[heads, tokens, head_dim]`) and keys `k` (`[kv_heads, tokens, head_dim]`) after RoPE,
    /// with the RoPE tables `cos` and `sin` (`[tokens, head_dim]`) that rotated them.
    fn observe_attention_rows(
        &mut self,
        _layer: usize,
        _q: &Tensor,
        _k: &Tensor,
        _cos: &Tensor,
        _sin: &Tensor,
    ) -> candle_core::Result<()> {
        Ok(())
    }
}

/// A decoder whose weights stay in the [`TensorSource`] until a block needs them.
pub struct Model<'a> {
    source: &'a dyn TensorSource,
    config: ModelConfig,
    device: Device,
    /// The RoPE of the global layers, and of Gemma 3's sliding-window layers.
    rope: Rope,
    local_rope: Option<Rope>,
}

/// The final norm and LM head (tied to the embedding or not).
#[derive(Debug, Clone)]
pub struct Head {
    pub norm: Tensor,
    /// `[vocab, hidden]`.
    pub lm_head: Tensor,
    eps: f64,
    /// Gemma: the norm multiplies by `1 + norm`.
    norm_adds_one: bool,
}

impl Head {
    /// `hidden`: `[tokens, hidden]` (output of the last block) -> logits `[tokens, vocab]`.
    pub fn logits(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        self.input(hidden)?.matmul(&self.lm_head.t()?)
    }

    /// What the output matrix multiplies: the final RMSNorm of the last block's outputs.
    pub fn input(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        if self.norm_adds_one {
            block::rms_norm(hidden, &(&self.norm + 1.0)?, self.eps)
        } else {
            block::rms_norm(hidden, &self.norm, self.eps)
        }
    }
}

impl<'a> Model<'a> {
    pub fn new(source: &'a dyn TensorSource, device: Device) -> Result<Self> {
        let config = source.config().clone();
        if config.num_key_value_heads == 0
            || !config
                .num_attention_heads
                .is_multiple_of(config.num_key_value_heads)
        {
            return Err(ModelError::Invalid(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                config.num_attention_heads, config.num_key_value_heads
            )));
        }
        // Every weight is there, in its shape, before any block runs: a checkpoint that lacks
        // one fails here, named by the source (by the name its file uses), not after the
        // blocks before it have run.
        for (name, shape) in crate::checkpoint::each_expected_tensor(&config) {
            let found = source.shape(&name)?;
            if found != shape {
                return Err(ModelError::Invalid(format!(
                    "tensor '{name}' has shape {found:?}; the config implies {shape:?}"
                )));
            }
        }
        let rope = Rope::new(&config);
        let local_rope = (0..config.num_hidden_layers)
            .find(|&l| config.is_local(l))
            .map(|l| Rope::for_layer(&config, l));
        Ok(Model {
            source,
            config,
            device,
            rope,
            local_rope,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn source(&self) -> &dyn TensorSource {
        self.source
    }

    /// Embeds each token sequence: one `[seq, hidden]` tensor per sequence (Gemma: times
    /// sqrt(hidden_size), as llama.cpp scales them).
    pub fn embed(&self, sequences: &[Vec<u32>]) -> Result<Vec<Tensor>> {
        let mut table = self.load("model.embed_tokens.weight")?;
        if self.config.architecture.scales_embeddings() {
            table = (table * (self.config.hidden_size as f64).sqrt())?;
        }
        let vocab = self.config.vocab_size;
        sequences
            .iter()
            .map(|s| {
                if let Some(&bad) = s.iter().find(|&&t| t as usize >= vocab) {
                    return Err(ModelError::Invalid(format!(
                        "token id {bad} is outside the vocabulary ({vocab})"
                    )));
                }
                let ids = Tensor::new(s.as_slice(), &self.device)?;
                Ok(table.index_select(&ids, 0)?)
            })
            .collect()
    }

    /// Loads block `layer`'s weights onto the device.
    pub fn load_block(&self, layer: usize) -> Result<Block> {
        if layer >= self.config.num_hidden_layers {
            return Err(ModelError::Invalid(format!(
                "block {layer} does not exist (the model has {})",
                self.config.num_hidden_layers
            )));
        }
        Block::load(self.source, layer, &self.device)
    }

    /// Block `layer`'s RoPE `(cos, sin)` tables for positions `0..seq_len`, as
    /// [`Block::forward`] takes them.
    pub fn rope_tables(&self, layer: usize, seq_len: usize) -> Result<(Tensor, Tensor)> {
        let rope = match &self.local_rope {
            Some(local) if self.config.is_local(layer) => local,
            _ => &self.rope,
        };
        Ok(rope.tables(seq_len, &self.device)?)
    }

    /// [`Model::rope_tables`] of every block, indexed by layer (computed once per kind of layer).
    pub fn all_rope_tables(&self, seq_len: usize) -> Result<Vec<(Tensor, Tensor)>> {
        let global = self.rope.tables(seq_len, &self.device)?;
        let local = match &self.local_rope {
            Some(rope) => Some(rope.tables(seq_len, &self.device)?),
            None => None,
        };
        Ok((0..self.config.num_hidden_layers)
            .map(|l| match &local {
                Some(local) if self.config.is_local(l) => local.clone(),
                _ => global.clone(),
            })
            .collect())
    }

    /// Runs every sequence through one block; returns the block outputs in the same order.
    pub fn run_block(
        &self,
        block: &Block,
        hidden: &[Tensor],
        mut observer: Option<&mut dyn LinearObserver>,
    ) -> Result<Vec<Tensor>> {
        let max_len = hidden
            .iter()
            .map(|h| h.dim(0))
            .collect::<candle_core::Result<Vec<_>>>()?
            .into_iter()
            .max()
            .unwrap_or(0);
        let (cos, sin) = self.rope_tables(block.layer, max_len)?;
        let threads = candle_core::utils::get_num_threads().min(hidden.len());
        if observer.is_some() || threads < 2 || !self.device.is_cpu() {
            let mut out = Vec::with_capacity(hidden.len());
            for x in hidden {
                let obs = observer
                    .as_mut()
                    .map(|o| &mut **o as &mut dyn LinearObserver);
                out.push(block.forward(&self.config, x, &cos, &sin, obs)?);
            }
            return Ok(out);
        }
        // Without an observer, sequences are independent: run them on all CPU cores (candle's
        // elementwise ops are single-threaded, so this beats relying on matmul threading alone).
        let per_thread = hidden.len().div_ceil(threads);
        let parts: Vec<candle_core::Result<Vec<Tensor>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = hidden
                .chunks(per_thread)
                .map(|part| {
                    let (cos, sin) = (&cos, &sin);
                    scope.spawn(move || {
                        part.iter()
                            .map(|x| block.forward(&self.config, x, cos, sin, None))
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("block worker panicked"))
                .collect()
        });
        let mut out = Vec::with_capacity(hidden.len());
        for part in parts {
            out.extend(part?);
        }
        Ok(out)
    }

    /// Loads the final norm and LM head (the embedding matrix when tied).
    pub fn load_head(&self) -> Result<Head> {
        let lm_head = if self.config.tie_word_embeddings {
            self.load("model.embed_tokens.weight")?
        } else {
            self.load("lm_head.weight")?
        };
        Ok(Head {
            norm: self.load("model.norm.weight")?,
            lm_head,
            eps: self.config.rms_norm_eps,
            norm_adds_one: self.config.architecture.norm_adds_one(),
        })
    }

    /// The shared block-at-a-time loop: runs `hidden` through every block and returns the last
    /// block's outputs. Before block `i` runs, `prepare(&mut block, &inputs)` may inspect or
    /// replace its weights (e.g. run it once with an observer, then quantize); `observer` sees the
    /// linear inputs of the run whose outputs feed the next block.
    pub fn forward_blocks(
        &self,
        mut hidden: Vec<Tensor>,
        mut observer: Option<&mut dyn LinearObserver>,
        mut prepare: impl FnMut(&mut Block, &[Tensor]) -> Result<()>,
    ) -> Result<Vec<Tensor>> {
        for layer in 0..self.config.num_hidden_layers {
            let mut block = self.load_block(layer)?;
            prepare(&mut block, &hidden)?;
            let obs = observer
                .as_mut()
                .map(|o| &mut **o as &mut dyn LinearObserver);
            hidden = self.run_block(&block, &hidden, obs)?;
        }
        Ok(hidden)
    }

    /// Full forward of a few sequences to logits `[seq, vocab]` each (tests, small prompts).
    pub fn logits(&self, sequences: &[Vec<u32>]) -> Result<Vec<Tensor>> {
        let hidden = self.embed(sequences)?;
        let hidden = self.forward_blocks(hidden, None, |_, _| Ok(()))?;
        let head = self.load_head()?;
        hidden.iter().map(|h| Ok(head.logits(h)?)).collect()
    }

    fn load(&self, name: &str) -> Result<Tensor> {
        Ok(block::to_device(self.source.load(name)?, &self.device)?)
    }
}
