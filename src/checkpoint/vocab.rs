//! Rebuilds Hugging Face `tokenizer.json` and `tokenizer_config.json` from a GGUF vocabulary.
//!
//! Supported `tokenizer.ggml.model` values:
//! - `"gpt2"`: byte-level BPE (tokens, merges, token types). The pre-tokenizer comes from
//!   `tokenizer.ggml.pre`, translated from llama.cpp's own table (`llama-vocab.cpp`): each of its
//!   regexes becomes an HF `Split` (behaviour `Isolated`, as llama.cpp keeps the text between
//!   matches), followed by a regex-free `ByteLevel` byte-to-unicode mapping. See [`PRE_TOKENIZERS`].
//! - `"llama"`: SentencePiece BPE with byte fallback (tokens, scores). HF's BPE needs merges, which
//!   are derived from the scores the way `transformers`' SentencePiece converter does: every split
//!   of a token into two tokens is a merge, ranked by the merged token's score.
//!
//! Token types (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
//! Control and unknown tokens become special added tokens, user-defined ones non-special added tokens
//! (matched whole in text, as llama.cpp does).

use std::collections::HashMap;

use serde_json::{json, Map, Value as Json};

use crate::container::gguf::{Array, GgufFile};

/// Errors from rebuilding a tokenizer; each names the GGUF key or token at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VocabError {
    #[error("key '{key}': {message}")]
    Key { key: String, message: String },
    #[error("tokenizer model '{0}' is not supported (supported: gpt2, llama)")]
    UnsupportedModel(String),
    #[error("tokenizer.ggml.pre '{0}' is not supported (supported: {1})")]
    UnsupportedPre(String, String),
    #[error("merge {index} '{merge}': {message}")]
    BadMerge {
        index: usize,
        merge: String,
        message: String,
    },
}

/// The tokenizer part of a GGUF file's metadata (`tokenizer.*` keys).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: "gpt2" or "llama".
    pub model: String,
    /// `tokenizer.ggml.pre` (gpt2 only).
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`, one per token (all normal when absent).
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.scores` (llama only).
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.merges`, "left right" (gpt2 only).
    pub merges: Vec<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub unknown_token_id: Option<u32>,
    pub padding_token_id: Option<u32>,
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (llama only; default true there).
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// `<arch>.context_length`, written as `model_max_length`.
    pub context_length: Option<u64>,
}

pub const TOKEN_NORMAL: i32 = 1;
pub const TOKEN_UNKNOWN: i32 = 2;
pub const TOKEN_CONTROL: i32 = 3;
pub const TOKEN_USER_DEFINED: i32 = 4;
pub const TOKEN_UNUSED: i32 = 5;
pub const TOKEN_BYTE: i32 = 6;

pub const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
pub const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A byte-level BPE pre-tokenizer, as llama.cpp defines it.
#[derive(Debug, Clone, Copy)]
pub struct PreTokenizer {
    /// `tokenizer.ggml.pre` values that select it.
    pub names: &'static [&'static str],
    /// Regexes applied in turn, each splitting the pieces of the previous one.
    pub regexes: &'static [&'static str],
    /// Unicode NFC before splitting (the original HF tokenizers of these models do it).
    pub nfc: bool,
    /// BPE `ignore_merges`: a word that is already a token is not merged further.
    pub ignore_merges: bool,
    /// HF `clean_up_tokenization_spaces` (llama.cpp's `clean_spaces`).
    pub clean_spaces: bool,
}

/// The pre-tokenizers supported, from llama.cpp's `llm_tokenizer_bpe` and `llama_vocab::load`.
pub const PRE_TOKENIZERS: &[PreTokenizer] = &[
    PreTokenizer {
        names: &["smollm"],
        regexes: &[r"\p{N}", GPT2_REGEX],
        nfc: false,
        ignore_merges: false,
        clean_spaces: false,
    },
    PreTokenizer {
        names: &["starcoder", "refact", "codeshell", "exaone", "minerva-7b"],
        regexes: &[r"\p{N}", GPT2_REGEX],
        nfc: false,
        ignore_merges: false,
        clean_spaces: true,
    },
    PreTokenizer {
        names: &[
            "gpt-2",
            "phi-2",
            "mpt",
            "olmo",
            "jais",
            "roberta-bpe",
            "exaone4",
        ],
        regexes: &[GPT2_REGEX],
        nfc: false,
        ignore_merges: false,
        clean_spaces: true,
    },
    PreTokenizer {
        names: &["qwen2", "deepseek-r1-qwen", "megrez"],
        regexes: &[QWEN2_REGEX],
        nfc: true,
        ignore_merges: false,
        clean_spaces: false,
    },
    PreTokenizer {
        names: &["stablelm2"],
        regexes: &[QWEN2_REGEX],
        nfc: false,
        ignore_merges: false,
        clean_spaces: true,
    },
    PreTokenizer {
        names: &["llama3", "llama-v3", "llama-bpe"],
        regexes: &[LLAMA3_REGEX],
        nfc: false,
        ignore_merges: true,
        clean_spaces: true,
    },
];

/// The pre-tokenizer for a `tokenizer.ggml.pre` value.
pub fn pre_tokenizer(name: &str) -> Option<&'static PreTokenizer> {
    PRE_TOKENIZERS.iter().find(|p| p.names.contains(&name))
}

impl GgufVocab {
    /// Reads the `tokenizer.*` keys of a GGUF file.
    pub fn from_gguf(f: &GgufFile) -> Result<Self, VocabError> {
        let key_err = |key: &str, message: &str| VocabError::Key {
            key: key.to_string(),
            message: message.to_string(),
        };
        let str_key = |key: &str| -> Result<Option<String>, VocabError> {
            match f.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_str()
                    .map(|s| Some(s.to_string()))
                    .ok_or_else(|| key_err(key, "not a string")),
            }
        };
        let u32_key = |key: &str| -> Result<Option<u32>, VocabError> {
            match f.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_u32()
                    .map(Some)
                    .ok_or_else(|| key_err(key, "not an unsigned 32-bit integer")),
            }
        };
        let bool_key = |key: &str| -> Result<Option<bool>, VocabError> {
            match f.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_bool()
                    .map(Some)
                    .ok_or_else(|| key_err(key, "not a bool")),
            }
        };
        let array = |key: &str| f.get(key).and_then(|v| v.as_array());

        let model = str_key("tokenizer.ggml.model")?
            .ok_or_else(|| key_err("tokenizer.ggml.model", "missing"))?;
        let tokens = array("tokenizer.ggml.tokens")
            .and_then(|a| a.as_strings())
            .ok_or_else(|| {
                key_err(
                    "tokenizer.ggml.tokens",
                    "missing or not an array of strings",
                )
            })?
            .to_vec();
        let n = tokens.len();
        let token_types = match array("tokenizer.ggml.token_type") {
            None => vec![TOKEN_NORMAL; n],
            Some(Array::I32(v)) => v.clone(),
            Some(Array::U32(v)) => v.iter().map(|&x| x as i32).collect(),
            Some(_) => return Err(key_err("tokenizer.ggml.token_type", "not an array of i32")),
        };
        if token_types.len() != n {
            return Err(key_err(
                "tokenizer.ggml.token_type",
                &format!("{} entries for {n} tokens", token_types.len()),
            ));
        }
        let scores = match array("tokenizer.ggml.scores") {
            None => Vec::new(),
            Some(Array::F32(v)) if v.len() == n => v.clone(),
            Some(_) => {
                return Err(key_err(
                    "tokenizer.ggml.scores",
                    "not an array of f32, one per token",
                ))
            }
        };
        let merges = match array("tokenizer.ggml.merges") {
            None => Vec::new(),
            Some(a) => a
                .as_strings()
                .ok_or_else(|| key_err("tokenizer.ggml.merges", "not an array of strings"))?
                .to_vec(),
        };
        let context_length = str_key("general.architecture")?
            .and_then(|arch| f.get(&format!("{arch}.context_length")))
            .and_then(|v| v.as_u64());
        let vocab = GgufVocab {
            model,
            pre: str_key("tokenizer.ggml.pre")?,
            tokens,
            token_types,
            scores,
            merges,
            bos_token_id: u32_key("tokenizer.ggml.bos_token_id")?,
            eos_token_id: u32_key("tokenizer.ggml.eos_token_id")?,
            unknown_token_id: u32_key("tokenizer.ggml.unknown_token_id")?,
            padding_token_id: u32_key("tokenizer.ggml.padding_token_id")?,
            add_bos_token: bool_key("tokenizer.ggml.add_bos_token")?,
            add_eos_token: bool_key("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: bool_key("tokenizer.ggml.add_space_prefix")?,
            chat_template: str_key("tokenizer.chat_template")?,
            context_length,
        };
        for (key, id) in [
            ("tokenizer.ggml.bos_token_id", vocab.bos_token_id),
            ("tokenizer.ggml.eos_token_id", vocab.eos_token_id),
            ("tokenizer.ggml.unknown_token_id", vocab.unknown_token_id),
            ("tokenizer.ggml.padding_token_id", vocab.padding_token_id),
        ] {
            if let Some(id) = id {
                if id as usize >= n {
                    return Err(key_err(
                        key,
                        &format!("token id {id} out of range ({n} tokens)"),
                    ));
                }
            }
        }
        Ok(vocab)
    }

    fn token(&self, id: Option<u32>) -> Option<&str> {
        id.and_then(|i| self.tokens.get(i as usize))
            .map(|s| s.as_str())
    }

    fn is_llama(&self) -> bool {
        self.model == "llama"
    }

    fn add_bos(&self) -> bool {
        self.add_bos_token.unwrap_or(self.is_llama())
    }

    fn add_eos(&self) -> bool {
        self.add_eos_token.unwrap_or(false)
    }

    /// The HF `tokenizer.json` for this vocabulary.
    pub fn tokenizer_json(&self) -> Result<Json, VocabError> {
        let (normalizer, pre_tokenizer, decoder, model) = match self.model.as_str() {
            "gpt2" => self.gpt2_parts()?,
            "llama" => self.llama_parts()?,
            other => return Err(VocabError::UnsupportedModel(other.to_string())),
        };
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": self.added_tokens(),
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": self.post_processor(),
            "decoder": decoder,
            "model": model,
        }))
    }

    /// The HF `tokenizer_config.json`: special tokens, whether BOS/EOS are added, chat template.
    pub fn tokenizer_config_json(&self) -> Result<Json, VocabError> {
        let mut c = Map::new();
        c.insert("add_bos_token".into(), json!(self.add_bos()));
        c.insert("add_eos_token".into(), json!(self.add_eos()));
        let mut decoder = Map::new();
        for t in self.added_tokens() {
            decoder.insert(t["id"].to_string(), added_token_config(&t));
        }
        c.insert("added_tokens_decoder".into(), Json::Object(decoder));
        for (key, id) in [
            ("bos_token", self.bos_token_id),
            ("eos_token", self.eos_token_id),
            ("unk_token", self.unknown_token_id),
            ("pad_token", self.padding_token_id),
        ] {
            c.insert(key.into(), self.token(id).map_or(Json::Null, |t| json!(t)));
        }
        if let Some(t) = &self.chat_template {
            c.insert("chat_template".into(), json!(t));
        }
        // llama.cpp's converter reads `add_prefix_space` back into `tokenizer.ggml.add_space_prefix`.
        if let Some(p) = self.add_space_prefix {
            c.insert("add_prefix_space".into(), json!(p));
        }
        let clean = match self.model.as_str() {
            "gpt2" => self.gpt2_pre()?.clean_spaces,
            _ => false,
        };
        c.insert("clean_up_tokenization_spaces".into(), json!(clean));
        if let Some(n) = self.context_length {
            c.insert("model_max_length".into(), json!(n));
        }
        c.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
        Ok(Json::Object(c))
    }

    fn gpt2_pre(&self) -> Result<&'static PreTokenizer, VocabError> {
        let name = self.pre.as_deref().unwrap_or("default");
        pre_tokenizer(name).ok_or_else(|| {
            let all: Vec<&str> = PRE_TOKENIZERS
                .iter()
                .flat_map(|p| p.names.iter().copied())
                .collect();
            VocabError::UnsupportedPre(name.to_string(), all.join(", "))
        })
    }

    /// The token -> id map. A repeated token string keeps its first id (HF's vocab is a map).
    fn vocab_map(&self) -> Map<String, Json> {
        let mut m = Map::new();
        for (id, t) in self.tokens.iter().enumerate() {
            if !m.contains_key(t) {
                m.insert(t.clone(), json!(id));
            }
        }
        m
    }

    fn gpt2_parts(&self) -> Result<(Json, Json, Json, Json), VocabError> {
        let pre = self.gpt2_pre()?;
        let known: HashMap<&str, usize> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        let mut merges = Vec::with_capacity(self.merges.len());
        for (index, m) in self.merges.iter().enumerate() {
            let bad = |message: &str| VocabError::BadMerge {
                index,
                merge: m.clone(),
                message: message.to_string(),
            };
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| bad("no space between the two parts"))?;
            if b.contains(' ') {
                return Err(bad("more than one space"));
            }
            if !known.contains_key(a) || !known.contains_key(b) {
                return Err(bad("a part is not in the vocabulary"));
            }
            merges.push(json!([a, b]));
        }
        let mut splits: Vec<Json> = pre
            .regexes
            .iter()
            .map(|r| {
                json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false})
            })
            .collect();
        splits.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}));
        let normalizer = if pre.nfc {
            json!({"type": "NFC"})
        } else {
            Json::Null
        };
        let model = json!({
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": pre.ignore_merges,
            "vocab": self.vocab_map(),
            "merges": merges,
        });
        let decoder = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false});
        Ok((
            normalizer,
            json!({"type": "Sequence", "pretokenizers": splits}),
            decoder,
            model,
        ))
    }

    fn llama_parts(&self) -> Result<(Json, Json, Json, Json), VocabError> {
        if self.scores.len() != self.tokens.len() {
            return Err(VocabError::Key {
                key: "tokenizer.ggml.scores".into(),
                message: "required for the llama (SentencePiece) tokenizer, one per token".into(),
            });
        }
        // Merges from scores: every split of a normal token into two tokens, ranked by the merged
        // token's score (higher first), then by the parts' ids (transformers' SentencePieceExtractor).
        let ids: HashMap<&str, usize> = {
            let mut m = HashMap::new();
            for (i, t) in self.tokens.iter().enumerate() {
                m.entry(t.as_str()).or_insert(i);
            }
            m
        };
        let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
        for (id, t) in self.tokens.iter().enumerate() {
            if self.token_types[id] != TOKEN_NORMAL && self.token_types[id] != TOKEN_USER_DEFINED {
                continue;
            }
            for (cut, _) in t.char_indices().skip(1) {
                let (a, b) = t.split_at(cut);
                if let (Some(&ia), Some(&ib)) = (ids.get(a), ids.get(b)) {
                    merges.push((self.scores[id], id, ia, ib));
                }
            }
        }
        merges.sort_by(|x, y| {
            y.0.partial_cmp(&x.0)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(x.2.cmp(&y.2))
                .then(x.3.cmp(&y.3))
        });
        let merges: Vec<Json> = merges
            .iter()
            .map(|&(_, _, a, b)| json!([self.tokens[a], self.tokens[b]]))
            .collect();
        let add_prefix = self.add_space_prefix.unwrap_or(true);
        let mut norm = Vec::new();
        if add_prefix {
            norm.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
        }
        norm.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));
        let mut dec = vec![
            json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if add_prefix {
            dec.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }
        let model = json!({
            "type": "BPE",
            "dropout": null,
            "unk_token": self.token(self.unknown_token_id),
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": true,
            "byte_fallback": true,
            "ignore_merges": false,
            "vocab": self.vocab_map(),
            "merges": merges,
        });
        Ok((
            json!({"type": "Sequence", "normalizers": norm}),
            Json::Null,
            json!({"type": "Sequence", "decoders": dec}),
            model,
        ))
    }

    /// Control and unknown tokens (special) and user-defined tokens (not special).
    fn added_tokens(&self) -> Vec<Json> {
        let mut out = Vec::new();
        for (id, (t, &ty)) in self.tokens.iter().zip(&self.token_types).enumerate() {
            let special = match ty {
                TOKEN_CONTROL | TOKEN_UNKNOWN => true,
                TOKEN_USER_DEFINED => false,
                _ => continue,
            };
            out.push(json!({
                "id": id,
                "content": t,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": special,
            }));
        }
        out
    }

    /// BOS/EOS added around each sequence when the GGUF asks for it; otherwise byte-level offsets
    /// only (gpt2) or nothing (llama).
    fn post_processor(&self) -> Json {
        let bos = self.token(self.bos_token_id).filter(|_| self.add_bos());
        let eos = self.token(self.eos_token_id).filter(|_| self.add_eos());
        if bos.is_none() && eos.is_none() {
            return if self.model == "gpt2" {
                json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false})
            } else {
                Json::Null
            };
        }
        let mut single = Vec::new();
        let mut pair = Vec::new();
        let mut specials = Map::new();
        let special =
            |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
        for (seq, type_id) in [("A", 0u32), ("B", 1)] {
            let target = if seq == "A" { &mut single } else { &mut pair };
            if let Some(b) = bos {
                target.push(special(b, type_id));
            }
            target.push(json!({"Sequence": {"id": seq, "type_id": type_id}}));
            if let Some(e) = eos {
                target.push(special(e, type_id));
            }
        }
        let pair: Vec<Json> = single.iter().cloned().chain(pair).collect();
        for (t, id) in [(bos, self.bos_token_id), (eos, self.eos_token_id)] {
            if let (Some(t), Some(id)) = (t, id) {
                specials.insert(t.to_string(), json!({"id": t, "ids": [id], "tokens": [t]}));
            }
        }
        json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
    }
}

fn added_token_config(t: &Json) -> Json {
    json!({
        "content": t["content"],
        "lstrip": false,
        "normalized": false,
        "rstrip": false,
        "single_word": false,
        "special": t["special"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_gpt2() -> GgufVocab {
        // Byte-level symbols: "Ġ" is the space byte.
        let tokens = ["<|endoftext|>", "a", "b", "Ġ", "ab", "Ġab", "1", "2"];
        GgufVocab {
            model: "gpt2".into(),
            pre: Some("smollm".into()),
            tokens: tokens.iter().map(|s| s.to_string()).collect(),
            token_types: vec![3, 1, 1, 1, 1, 1, 1, 1],
            merges: vec!["a b".into(), "Ġ ab".into()],
            bos_token_id: Some(0),
            eos_token_id: Some(0),
            add_bos_token: Some(false),
            chat_template: Some("{{ messages }}".into()),
            context_length: Some(128),
            ..Default::default()
        }
    }

    fn load(j: &Json) -> tokenizers::Tokenizer {
        tokenizers::Tokenizer::from_bytes(serde_json::to_vec(j).unwrap()).unwrap()
    }

    #[test]
    fn tiny_gpt2_tokenizer_encodes() {
        let v = tiny_gpt2();
        let tok = load(&v.tokenizer_json().unwrap());
        let ids = tok
            .encode("ab ab12<|endoftext|>", false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(ids, vec![4, 5, 6, 7, 0]);
        assert_eq!(tok.decode(&ids, false).unwrap(), "ab ab12<|endoftext|>");
        let c = v.tokenizer_config_json().unwrap();
        assert_eq!(c["bos_token"], "<|endoftext|>");
        assert_eq!(c["add_bos_token"], false);
        assert_eq!(c["chat_template"], "{{ messages }}");
        assert_eq!(c["added_tokens_decoder"]["0"]["special"], true);
        assert_eq!(c["model_max_length"], 128);
    }

    #[test]
    fn bos_is_added_when_asked() {
        let mut v = tiny_gpt2();
        v.add_bos_token = Some(true);
        let tok = load(&v.tokenizer_json().unwrap());
        assert_eq!(tok.encode("ab", true).unwrap().get_ids(), &[0, 4]);
        assert_eq!(tok.encode("ab", false).unwrap().get_ids(), &[4]);
    }

    #[test]
    fn errors_name_the_problem() {
        let mut v = tiny_gpt2();
        v.pre = Some("nonesuch".into());
        let e = v.tokenizer_json().unwrap_err().to_string();
        assert!(e.contains("nonesuch") && e.contains("smollm"), "{e}");
        let mut v = tiny_gpt2();
        v.merges.push("a zz".into());
        let e = v.tokenizer_json().unwrap_err().to_string();
        assert!(e.contains("merge 2 'a zz'"), "{e}");
        let mut v = tiny_gpt2();
        v.model = "bert".into();
        assert!(v.tokenizer_json().unwrap_err().to_string().contains("bert"));
    }

    #[test]
    fn tiny_llama_spm_merges_from_scores() {
        let tokens = ["<unk>", "<s>", "</s>", "<0x41>", "▁", "a", "b", "ab", "▁ab"];
        let v = GgufVocab {
            model: "llama".into(),
            tokens: tokens.iter().map(|s| s.to_string()).collect(),
            token_types: vec![2, 3, 3, 6, 1, 1, 1, 1, 1],
            scores: vec![0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0],
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            unknown_token_id: Some(0),
            ..Default::default()
        };
        let tok = load(&v.tokenizer_json().unwrap());
        // BOS is added by default for llama; "A" is not in the vocabulary and falls back to its byte.
        assert_eq!(tok.encode("ab A", true).unwrap().get_ids(), &[1, 8, 4, 3]);
        assert_eq!(tok.decode(&[8, 4, 3], false).unwrap(), "ab A");
    }
}
