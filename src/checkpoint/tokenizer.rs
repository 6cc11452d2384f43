//! The tokenizer of an HF folder: `tokenizer.json` (via the `tokenizers` crate) plus the special
//! token settings of `tokenizer_config.json`.

use super::CheckpointError;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A loaded tokenizer with the BOS/EOS policy the model was trained with.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// Id of the beginning-of-sequence token, if the tokenizer has one.
    pub bos_token_id: Option<u32>,
    /// Id of the end-of-sequence token, if the tokenizer has one.
    pub eos_token_id: Option<u32>,
    /// Whether a BOS token is put in front of a text (llama.cpp's `add_bos_token`).
    pub add_bos_token: bool,
    /// The Jinja chat template, if tokenizer_config.json has one.
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_id", &self.eos_token_id)
            .field("add_bos_token", &self.add_bos_token)
            .finish()
    }
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json` (required) and `dir/tokenizer_config.json` (optional).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let dir = dir.as_ref();
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(CheckpointError::Invalid {
                path,
                message: "tokenizer.json not found".into(),
            });
        }
        let bytes = std::fs::read(&path).map_err(|source| CheckpointError::Io {
            path: path.clone(),
            source,
        })?;
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = if config_path.is_file() {
            let text =
                std::fs::read_to_string(&config_path).map_err(|source| CheckpointError::Io {
                    path: config_path.clone(),
                    source,
                })?;
            serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
                path: config_path.clone(),
                message: format!("malformed JSON: {e}"),
            })?
        } else {
            Value::Null
        };
        Self::from_json(&bytes, &config, &path, &config_path)
    }

    /// Builds a tokenizer from the contents of tokenizer.json and tokenizer_config.json
    /// (`Value::Null` when there is none); the paths only name the origin in error messages.
    pub fn from_json(
        tokenizer_json: &[u8],
        config: &Value,
        path: &Path,
        config_path: &Path,
    ) -> Result<Self, CheckpointError> {
        let path = path.to_path_buf();
        let config_path = config_path.to_path_buf();
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json).map_err(|e| {
            CheckpointError::Invalid {
                path: path.clone(),
                message: format!("cannot load tokenizer: {e}"),
            }
        })?;

        let special = |key: &str| -> Result<Option<u32>, CheckpointError> {
            let content = match config.get(key) {
                None | Some(Value::Null) => return Ok(None),
                Some(Value::String(s)) => s.as_str(),
                Some(Value::Object(o)) => match o.get("content").and_then(Value::as_str) {
                    Some(s) => s,
                    None => return Ok(None),
                },
                Some(_) => {
                    return Err(CheckpointError::Invalid {
                        path: config_path.clone(),
                        message: format!("'{key}' must be a string or an object with 'content'"),
                    })
                }
            };
            inner
                .token_to_id(content)
                .map(Some)
                .ok_or_else(|| CheckpointError::Invalid {
                    path: config_path.clone(),
                    message: format!("{key} '{content}' is not in the vocabulary"),
                })
        };
        let bos_token_id = special("bos_token")?;
        let eos_token_id = special("eos_token")?;
        // Without an explicit add_bos_token, BOS is added when tokenizer.json's post-processor
        // adds it (as HF does for llama 2/3).
        let add_bos_token = match config.get("add_bos_token").and_then(Value::as_bool) {
            Some(b) => b,
            None => match bos_token_id {
                Some(bos) => inner
                    .encode("a", true)
                    .map(|e| e.get_ids().first() == Some(&bos))
                    .unwrap_or(false),
                None => false,
            },
        };
        let chat_template = match config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        Ok(Tokenizer {
            inner,
            path,
            bos_token_id,
            eos_token_id,
            add_bos_token,
            chat_template,
        })
    }

    /// Number of tokens including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Tokenizes a text. Special-token text in it (e.g. `<|endoftext|>`) becomes the special token,
    /// unlike llama-perplexity, which does not parse specials. With `add_special`,
    /// BOS is prepended when the tokenizer adds BOS and has one (llama.cpp's `add_special = true`).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, CheckpointError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| CheckpointError::Invalid {
                path: self.path.clone(),
                message: format!("tokenizing failed: {e}"),
            })?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_special && self.add_bos_token {
            ids.extend(self.bos_token_id);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Turns ids back into text (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String, CheckpointError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| CheckpointError::Invalid {
                path: self.path.clone(),
                message: format!("decoding failed: {e}"),
            })
    }

    /// The `tokenizers` tokenizer underneath.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
