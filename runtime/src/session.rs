//! A conversation's state: the tokens the KV cache holds, so that each new prompt (the whole
//! conversation rendered again, say) only runs the tokens after the part already cached.

use crate::{KvCache, KvType, Model, RuntimeError};

pub struct Session<'m> {
    model: &'m Model<'m>,
    cache: KvCache,
    tokens: Vec<u32>,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Model<'m>, kv: KvType, ctx: usize) -> Self {
        Self {
            model,
            cache: model.new_cache(kv, ctx),
            tokens: Vec::new(),
        }
    }

    /// The tokens run so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// Makes the cache hold exactly `tokens`, keeping the longest prefix it already holds, and
    /// returns the logits after the last token. Returns also how many tokens were run.
    pub fn sync(&mut self, tokens: &[u32]) -> Result<(Vec<f32>, usize), RuntimeError> {
        if tokens.is_empty() {
            return Err(RuntimeError::EmptyPrompt);
        }
        let common = self
            .tokens
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        // At least the last token runs, to produce its logits.
        let keep = common.min(tokens.len().saturating_sub(1));
        if tokens.len() > self.cache.ctx() {
            return Err(RuntimeError::ContextFull {
                tokens: tokens.len(),
                ctx: self.cache.ctx(),
            });
        }
        self.cache.truncate(keep);
        self.tokens.truncate(keep);
        let new = &tokens[keep..];
        let logits = self.model.forward(&mut self.cache, new, new.len() - 1)?;
        self.tokens.extend_from_slice(new);
        Ok((logits, new.len()))
    }

    /// Runs one more token and returns the logits after it.
    pub fn push(&mut self, token: u32) -> Result<Vec<f32>, RuntimeError> {
        let logits = self.model.forward(&mut self.cache, &[token], 0)?;
        self.tokens.push(token);
        Ok(logits)
    }
}
