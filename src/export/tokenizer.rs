//! The `tokenizer.*` GGUF keys from Hugging Face tokenizer files, as llama.cpp's converter writes them.
//!
//! Input ([`TokenizerFiles`]): `tokenizer.json` (required), `tokenizer_config.json`, `config.json`
//! and `chat_template.jinja` / `chat_template.json` (optional). `tokenizer.model` (SentencePiece
//! protobuf) is not read: the SentencePiece vocabulary is taken from `tokenizer.json`.
//!
//! Which vocabulary path (mirroring `convert_hf_to_gguf.py`):
//! - **gpt2** (byte-level BPE, `BpeVocab`/`get_vocab_base`): `tokenizer.ggml.model = "gpt2"`, the
//!   detected `tokenizer.ggml.pre` (see [`super::pretokenizer`]), tokens for ids `0..vocab_size`
//!   (`vocab_size` from the model config; holes become `[PAD{i}]`, type UNUSED, and so does a
//!   vocabulary entry spelled `[PAD{id}]` at its own id, as a GGUF -> HF rebuild leaves them), token types
//!   (added tokens: CONTROL when special or when they look special — `<|...|>` etc. — else
//!   USER_DEFINED with `▁` written as a space; every other token NORMAL), and the merges (pairs
//!   joined by a space, a space inside a part written as U+0120, as gguf-py does).
//! - **llama** (SentencePiece-style BPE with byte fallback, `LlamaHfVocab`; for the llama and
//!   gemma3 architectures, which llama.cpp converts from their `tokenizer.model`; gemma3 with
//!   `add_space_prefix = false`): `tokenizer.ggml.model = "llama"`, `pre = "default"`, token types
//!   UNKNOWN for the model's `unk_token` (as SentencePiece's own converter path types it; llama.cpp's
//!   `tokenizer.json` path would say CONTROL), BYTE for `<0xXX>`, CONTROL for special added tokens,
//!   USER_DEFINED for other added tokens.
//!   **Deviation:** llama.cpp writes the score -1000 for every token when it converts from
//!   `tokenizer.json` (it has no scores there), which leaves its SentencePiece tokenizer without a
//!   merge order. We write `-rank` of the first merge that produces a token (so the merge order
//!   survives; this is exactly what our GGUF -> HF rebuild ranks merges by), and `-(merges + 1)` for
//!   tokens no merge produces.
//! - Special tokens and flags follow gguf-py's `SpecialVocab`: ids of bos/eos/unk/sep/pad/cls/mask
//!   from the `*_token` entries of `tokenizer_config.json` looked up among `tokenizer.json`'s added
//!   tokens, then `config.json`'s `*_token_id`; `add_bos_token`/`add_eos_token` from the
//!   post-processor (`ByteLevel`: both false; `TemplateProcessing`: a leading bos/cls and a trailing
//!   special token; `RobertaProcessing`: true), else from `tokenizer_config.json`. Not ported: the
//!   eot/eom re-labelling and the separator detection of paired templates.
//! - `tokenizer.chat_template` from `tokenizer_config.json`, else `chat_template.jinja`/`.json`
//!   (a list of named templates becomes `tokenizer.chat_template.<name>` and `tokenizer.chat_templates`).
//! - llama architecture only (`LlamaModel.set_vocab`): `tokenizer.ggml.add_space_prefix` from
//!   `add_prefix_space` in `tokenizer_config.json`, and llama.cpp's override of `add_bos_token` to
//!   false for vocabularies of exactly 49152 tokens (its "granite small models" rule, which SmolLM2
//!   also meets).
//! - Not ported: the encode/decode re-normalization of non-normalized added tokens (needs
//!   `transformers`; an identity for the tokenizers we handle).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::pretokenizer::{self, PreMatch};
use super::ExportError;
use crate::checkpoint::vocab::{
    GgufVocab, TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_UNUSED,
    TOKEN_USER_DEFINED,
};
use crate::checkpoint::{Architecture, ModelConfig};
use crate::container::gguf::{Array, GgufFile, Value};

/// The Hugging Face tokenizer files of a model, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerFiles {
    /// The folder the files were read from (or the GGUF file a vocabulary was rebuilt from);
    /// used to name files in error messages.
    pub origin: PathBuf,
    /// `tokenizer.json`.
    pub tokenizer: Json,
    /// `tokenizer_config.json`, if present.
    pub tokenizer_config: Option<Json>,
    /// `config.json`, if present (only its `*_token_id` entries are used here).
    pub config: Option<Json>,
    /// The template of `chat_template.jinja` (a string) or `chat_template.json` (its
    /// `chat_template` value), if present.
    pub chat_template_file: Option<Json>,
}

impl TokenizerFiles {
    /// Reads the tokenizer files of an HF folder. A missing or malformed `tokenizer.json` is an
    /// error naming the file; the other files are optional but must parse when present.
    pub fn read(dir: &Path) -> Result<Self, ExportError> {
        let tokenizer = read_json(&dir.join("tokenizer.json"))?;
        let optional = |name: &str| -> Result<Option<Json>, ExportError> {
            let p = dir.join(name);
            if p.is_file() {
                read_json(&p).map(Some)
            } else {
                Ok(None)
            }
        };
        let jinja = dir.join("chat_template.jinja");
        let chat_template_file = if jinja.is_file() {
            Some(Json::String(std::fs::read_to_string(&jinja).map_err(
                |source| ExportError::Io {
                    path: jinja.clone(),
                    source,
                },
            )?))
        } else {
            optional("chat_template.json")?.map(|j| j["chat_template"].clone())
        };
        Ok(TokenizerFiles {
            origin: dir.to_path_buf(),
            tokenizer,
            tokenizer_config: optional("tokenizer_config.json")?,
            config: optional("config.json")?,
            chat_template_file,
        })
    }

    /// The tokenizer files our GGUF -> HF materialisation would write for a GGUF file's vocabulary
    /// (`checkpoint::vocab`), built in memory.
    pub fn from_gguf(path: &Path, file: &GgufFile) -> Result<Self, ExportError> {
        let err = |e: crate::checkpoint::vocab::VocabError| ExportError::Invalid {
            path: path.to_path_buf(),
            message: format!("rebuilding the tokenizer: {e}"),
        };
        let vocab = GgufVocab::from_gguf(file).map_err(err)?;
        Ok(TokenizerFiles {
            origin: path.to_path_buf(),
            tokenizer: vocab.tokenizer_json().map_err(err)?,
            tokenizer_config: Some(vocab.tokenizer_config_json().map_err(err)?),
            config: None,
            chat_template_file: None,
        })
    }

    fn file(&self, name: &str) -> PathBuf {
        if self.origin.is_dir() || self.origin.extension().is_none() {
            self.origin.join(name)
        } else {
            self.origin.clone()
        }
    }
}

fn read_json(path: &Path) -> Result<Json, ExportError> {
    let bytes = std::fs::read(path).map_err(|source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ExportError::Invalid {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })
}

/// The tokenizer keys, and how the pre-tokenizer was found (`None` for the llama model).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerKeys {
    pub keys: Vec<(String, Value)>,
    pub pre: Option<PreMatch>,
}

/// Builds the `tokenizer.*` keys; see the module documentation.
pub fn tokenizer_keys(
    files: &TokenizerFiles,
    config: &ModelConfig,
) -> Result<TokenizerKeys, ExportError> {
    let tok_path = files.file("tokenizer.json");
    let bad = |message: String| ExportError::Invalid {
        path: tok_path.clone(),
        message,
    };
    let tok = &files.tokenizer;
    let model = &tok["model"];
    match model["type"].as_str() {
        Some("BPE") => {}
        other => {
            return Err(bad(format!(
                "tokenizer model type {} is not supported (only BPE: byte-level or SentencePiece-style)",
                other.map_or("(missing)".to_string(), |t| format!("'{t}'"))
            )))
        }
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("model.vocab is missing or not an object".into()))?;
    // id -> token, base vocabulary first, then the added tokens (AutoTokenizer's `vocab`).
    let mut by_id: BTreeMap<u32, String> = BTreeMap::new();
    for (t, id) in vocab {
        let id = json_id(id).ok_or_else(|| bad(format!("model.vocab['{t}'] is not a token id")))?;
        by_id.insert(id, t.clone());
    }
    let base_size = by_id.len();
    let mut added: HashMap<u32, bool> = HashMap::new();
    let added_list = tok["added_tokens"].as_array().cloned().unwrap_or_default();
    for a in &added_list {
        let (Some(id), Some(content)) = (json_id(&a["id"]), a["content"].as_str()) else {
            return Err(bad(format!("added token {a} has no id or content")));
        };
        by_id.insert(id, content.to_string());
        added.insert(id, a["special"].as_bool().unwrap_or(false));
    }
    let n = config.vocab_size;
    if let Some((&max, t)) = by_id.last_key_value() {
        if max as usize >= n {
            return Err(bad(format!(
                "token '{t}' has id {max}, but the model config says vocab_size {n}"
            )));
        }
    }

    let mut m = Meta::default();
    let byte_fallback = model["byte_fallback"].as_bool().unwrap_or(false);
    let ignore_merges = model["ignore_merges"].as_bool().unwrap_or(false);
    let spm = matches!(
        config.architecture,
        Architecture::Llama | Architecture::Mistral | Architecture::Gemma3
    ) && byte_fallback
        && !ignore_merges
        && tok["decoder"]["type"].as_str() == Some("Sequence");
    let merges = read_merges(&model["merges"]).map_err(bad)?;
    let tc = files.tokenizer_config.as_ref();
    let llama_arch = matches!(
        config.architecture,
        Architecture::Llama | Architecture::Mistral
    );
    if llama_arch {
        if let Some(p) = tc.and_then(|c| c["add_prefix_space"].as_bool()) {
            m.set("tokenizer.ggml.add_space_prefix", p);
        }
    }
    if config.architecture == Architecture::Gemma3 {
        // Gemma3Model.set_vocab: a SentencePiece vocabulary without the space prefix.
        m.set("tokenizer.ggml.add_space_prefix", false);
    }

    let pre;
    let n_vocab_limit;
    if spm {
        pre = None;
        let unreached = -(merges.len() as f32) - 1.0;
        let mut score: HashMap<String, f32> = HashMap::new();
        for (rank, mg) in merges.iter().enumerate() {
            if let Some((a, b)) = mg.split_once(' ') {
                score.entry(format!("{a}{b}")).or_insert(-(rank as f32));
            }
        }
        let mut tokens = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut scores = Vec::with_capacity(n);
        for id in 0..n as u32 {
            let Some(t) = by_id.get(&id) else {
                tokens.push(format!("[PAD{id}]"));
                types.push(TOKEN_UNUSED);
                scores.push(unreached);
                continue;
            };
            let ty = match added.get(&id) {
                _ if model["unk_token"].as_str() == Some(t.as_str()) => TOKEN_UNKNOWN,
                Some(true) => TOKEN_CONTROL,
                Some(false) if (id as usize) >= base_size => TOKEN_USER_DEFINED,
                _ if is_byte_token(t) => TOKEN_BYTE,
                _ if is_pad_placeholder(t, id) => TOKEN_UNUSED,
                _ => TOKEN_NORMAL,
            };
            let s = if ty == TOKEN_NORMAL {
                score.get(t).copied().unwrap_or(unreached)
            } else {
                unreached
            };
            tokens.push(t.clone());
            types.push(ty);
            scores.push(s);
        }
        m.set("tokenizer.ggml.model", "llama");
        m.set("tokenizer.ggml.pre", "default");
        m.set("tokenizer.ggml.tokens", tokens);
        m.set("tokenizer.ggml.scores", scores);
        m.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
        n_vocab_limit = Some(n);
    } else {
        let clean = tc.and_then(|c| c["clean_up_tokenization_spaces"].as_bool());
        let found = pretokenizer::detect(tok, clean).map_err(bad)?;
        let mut tokens = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        for id in 0..n as u32 {
            let Some(t) = by_id.get(&id) else {
                tokens.push(format!("[PAD{id}]"));
                types.push(TOKEN_UNUSED);
                continue;
            };
            match added.get(&id) {
                Some(&special) if special || looks_special(t) => {
                    tokens.push(t.clone());
                    types.push(TOKEN_CONTROL);
                }
                Some(_) => {
                    tokens.push(t.replace('\u{2581}', " "));
                    types.push(TOKEN_USER_DEFINED);
                }
                None if is_pad_placeholder(t, id) => {
                    tokens.push(t.clone());
                    types.push(TOKEN_UNUSED);
                }
                None => {
                    tokens.push(t.clone());
                    types.push(TOKEN_NORMAL);
                }
            }
        }
        m.set("tokenizer.ggml.model", "gpt2");
        m.set("tokenizer.ggml.pre", found.name.as_str());
        m.set("tokenizer.ggml.tokens", tokens);
        m.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
        if !merges.is_empty() {
            m.set("tokenizer.ggml.merges", merges);
        }
        pre = Some(found);
        n_vocab_limit = None;
    }
    special_vocab(files, config, &added_list, n_vocab_limit, &mut m);
    if llama_arch && n == 49152 {
        // llama.cpp: "Apply to granite small models only".
        m.set("tokenizer.ggml.add_bos_token", false);
    }
    Ok(TokenizerKeys { keys: m.0, pre })
}

fn json_id(v: &Json) -> Option<u32> {
    v.as_u64().and_then(|x| u32::try_from(x).ok())
}

/// `[PAD{id}]` at its own id: the placeholder llama.cpp's converter writes for an id the HF
/// vocabulary lacks. A GGUF -> HF rebuild keeps it as an ordinary vocabulary entry; typing it
/// UNUSED again makes the round trip reproduce the original token types.
fn is_pad_placeholder(t: &str, id: u32) -> bool {
    t.strip_prefix("[PAD")
        .and_then(|r| r.strip_suffix(']'))
        .is_some_and(|n| n == id.to_string())
}

fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6
        && t.starts_with("<0x")
        && t.ends_with('>')
        && b[3..5].iter().all(u8::is_ascii_hexdigit)
}

/// llama.cpp's `does_token_look_special`.
pub fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// `model.merges` as GGUF merge strings: "a b" strings as they are, `[a, b]` pairs joined by a
/// space with spaces inside a part written as U+0120 (gguf-py's encoding).
fn read_merges(v: &Json) -> Result<Vec<String>, String> {
    let Some(list) = v.as_array() else {
        return Ok(Vec::new());
    };
    list.iter()
        .enumerate()
        .map(|(i, mg)| match mg {
            Json::String(s) => Ok(s.clone()),
            Json::Array(p) if p.len() == 2 && p.iter().all(|x| x.is_string()) => Ok(p
                .iter()
                .map(|x| x.as_str().unwrap_or_default().replace(' ', "\u{120}"))
                .collect::<Vec<_>>()
                .join(" ")),
            _ => Err(format!(
                "model.merges[{i}] is neither \"a b\" nor [\"a\", \"b\"]"
            )),
        })
        .collect()
}

const SPECIAL_TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

fn id_key(typ: &str) -> String {
    let name = match typ {
        "unk" => "unknown",
        "sep" => "seperator", // sic, llama.cpp's key
        "pad" => "padding",
        other => other,
    };
    format!("tokenizer.ggml.{name}_token_id")
}

/// gguf-py's `SpecialVocab` (see the module documentation for what is ported).
fn special_vocab(
    files: &TokenizerFiles,
    config: &ModelConfig,
    added_tokens: &[Json],
    n_vocab: Option<usize>,
    m: &mut Meta,
) {
    let tok = &files.tokenizer;
    let tc = files.tokenizer_config.as_ref();
    let content = |v: &Json| -> Option<String> {
        match v {
            Json::String(s) if !s.is_empty() => Some(s.clone()),
            Json::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
            _ => None,
        }
    };
    let mut names: HashMap<&str, String> = HashMap::new();
    if let Some(c) = tc {
        for typ in SPECIAL_TYPES {
            if let Some(s) = content(&c[format!("{typ}_token")]) {
                names.insert(typ, s);
            }
        }
        if !names.contains_key("bos") {
            if let Some(cls) = names.get("cls").cloned() {
                names.insert("bos", cls);
            }
        }
        if !names.contains_key("eos") {
            if let Some(sep) = names.get("sep").cloned() {
                names.insert("eos", sep);
            }
        }
    }
    let mut add: Vec<(&str, bool)> = Vec::new();
    let set_add =
        |add: &mut Vec<(&str, bool)>, typ: &'static str, v: bool, overwrite: bool| match add
            .iter_mut()
            .find(|(t, _)| *t == typ)
        {
            Some(e) if overwrite => e.1 = v,
            Some(_) => {}
            None => add.push((typ, v)),
        };
    let post = &tok["post_processor"];
    let processors: Vec<&Json> = match post["processors"].as_array() {
        Some(list) => list.iter().collect(),
        None if !post.is_null() => vec![post],
        None => Vec::new(),
    };
    for p in processors {
        match p["type"].as_str() {
            Some("ByteLevel") => {
                set_add(&mut add, "bos", false, false);
                set_add(&mut add, "eos", false, false);
            }
            Some("RobertaProcessing") => {
                set_add(&mut add, "bos", true, true);
                set_add(&mut add, "eos", true, true);
                set_add(&mut add, "sep", true, true);
            }
            Some("TemplateProcessing") => {
                let single = p["single"].as_array().cloned().unwrap_or_default();
                if single.len() > 1 {
                    let special = |e: &Json| e["SpecialToken"]["id"].as_str().map(String::from);
                    if let Some(first) = special(&single[0]) {
                        let known =
                            names.get("bos") == Some(&first) || names.get("cls") == Some(&first);
                        if tc.is_some() && !known {
                            names.entry("bos").or_insert_with(|| first.clone());
                            names.entry("cls").or_insert_with(|| first.clone());
                        }
                        let is_bos = names.get("bos") == Some(&first)
                            || names.get("cls") == Some(&first)
                            || tc.is_none();
                        set_add(&mut add, "bos", is_bos, true);
                    }
                    if let Some(last) = special(&single[single.len() - 1]) {
                        if tc.is_some() {
                            names.insert("eos", last);
                        }
                        set_add(&mut add, "eos", true, true);
                    }
                }
            }
            _ => {}
        }
    }
    let mut ids: Vec<(&str, u32)> = Vec::new();
    let set_id = |ids: &mut Vec<(&str, u32)>, typ: &'static str, id: u32| {
        if n_vocab.is_none_or(|n| (id as usize) < n) && !ids.iter().any(|(t, _)| *t == typ) {
            ids.push((typ, id));
        }
    };
    if let Some(c) = tc {
        for typ in SPECIAL_TYPES {
            if let Some(v) = c[format!("add_{typ}_token")].as_bool() {
                set_add(&mut add, typ, v, false);
            }
            if let Some(name) = names.get(typ) {
                let found = added_tokens
                    .iter()
                    .find(|a| a["content"].as_str() == Some(name.as_str()))
                    .and_then(|a| json_id(&a["id"]));
                if let Some(id) = found {
                    set_id(&mut ids, typ, id);
                }
            }
        }
    }
    match &files.config {
        Some(cfg) => {
            for typ in SPECIAL_TYPES {
                if let Some(id) = json_id(&cfg[format!("{typ}_token_id")]) {
                    set_id(&mut ids, typ, id);
                }
            }
        }
        None => {
            if let Some(id) = config.bos_token_id {
                set_id(&mut ids, "bos", id);
            }
            if let Some(id) = config.eos_token_id {
                set_id(&mut ids, "eos", id);
            }
        }
    }
    for (typ, id) in ids {
        m.set(id_key(typ), id);
    }
    for (typ, v) in add {
        if matches!(typ, "bos" | "eos" | "sep") {
            m.set(format!("tokenizer.ggml.add_{typ}_token"), v);
        }
    }
    let template = tc
        .map(|c| c["chat_template"].clone())
        .filter(|t| !t.is_null())
        .or_else(|| files.chat_template_file.clone());
    match template {
        Some(Json::String(t)) => m.set("tokenizer.chat_template", t),
        Some(Json::Array(list)) => {
            let mut named = Vec::new();
            for choice in list {
                let name: String = choice["name"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let Some(t) = choice["template"].as_str() else {
                    continue;
                };
                if name == "default" {
                    m.set("tokenizer.chat_template", t);
                } else if !name.is_empty() {
                    m.set(format!("tokenizer.chat_template.{name}"), t);
                    named.push(name);
                }
            }
            if !named.is_empty() {
                m.set("tokenizer.chat_templates", named);
            }
        }
        _ => {}
    }
    let (mut lower, mut strip) = (None, None);
    parse_normalizer(&tok["normalizer"], &mut lower, &mut strip);
    if let Some(v) = lower {
        m.set("tokenizer.ggml.normalizer.lowercase", v);
    }
    if let Some(v) = strip {
        m.set("tokenizer.ggml.normalizer.strip_accents", v);
    }
}

fn parse_normalizer(n: &Json, lower: &mut Option<bool>, strip: &mut Option<bool>) {
    match n["type"].as_str() {
        Some("Lowercase") => *lower = Some(true),
        Some("StripAccents") => *strip = Some(true),
        Some("BertNormalizer") => {
            if let Some(v) = n["lowercase"].as_bool() {
                *lower = Some(v);
            }
            if let Some(v) = n["strip_accents"].as_bool() {
                *strip = Some(v);
            }
        }
        Some("Sequence") => {
            for x in n["normalizers"].as_array().into_iter().flatten() {
                parse_normalizer(x, lower, strip);
            }
        }
        _ => {}
    }
}

/// Ordered metadata where setting a key again replaces its value (gguf-py warns and overwrites;
/// our GGUF writer rejects duplicates).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Meta(pub Vec<(String, Value)>);

impl Meta {
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn config(arch: Architecture, vocab_size: usize) -> ModelConfig {
        ModelConfig {
            architecture: arch,
            hidden_size: 64,
            intermediate_size: 96,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            vocab_size,
            max_position_embeddings: 256,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: None,
            tie_word_embeddings: true,
            attention_bias: false,
            rotary_dim: 16,
            local_attention: None,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
        }
    }

    /// A byte-level BPE tokenizer in the style of SmolLM2's original tokenizer.json.
    fn write_gpt2_folder(dir: &Path) {
        let tok = json!({
            "version": "1.0",
            "added_tokens": [
                {"id": 0, "content": "<|endoftext|>", "special": true, "normalized": false},
                {"id": 1, "content": "<|im_start|>", "special": true, "normalized": false},
                {"id": 2, "content": "<|im_end|>", "special": true, "normalized": false},
                {"id": 9, "content": "<tool>", "special": false, "normalized": false}
            ],
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "byte_fallback": false,
                "vocab": {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "a": 3, "b": 4,
                          "Ġ": 5, "ab": 6, "Ġab": 7, "1": 8, "<tool>": 9},
                "merges": ["a b", ["Ġ", "ab"]]}
        });
        let tc = json!({
            "add_prefix_space": false,
            "bos_token": "<|im_start|>",
            "eos_token": {"content": "<|im_end|>", "special": true},
            "unk_token": "<|endoftext|>",
            "pad_token": "<|im_end|>",
            "clean_up_tokenization_spaces": false,
            "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"
        });
        std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
        std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
        std::fs::write(
            dir.join("config.json"),
            json!({"bos_token_id": 1, "eos_token_id": 2}).to_string(),
        )
        .unwrap();
    }

    fn strings(m: &Meta, key: &str) -> Vec<String> {
        m.get(key)
            .and_then(|v| v.as_array())
            .and_then(|a| a.as_strings())
            .unwrap_or_else(|| panic!("{key}"))
            .to_vec()
    }

    #[test]
    fn gpt2_folder_gives_llama_cpp_keys() {
        let dir = tempfile::tempdir().unwrap();
        write_gpt2_folder(dir.path());
        let files = TokenizerFiles::read(dir.path()).unwrap();
        // The config says 12 tokens: ids 10 and 11 become [PAD10], [PAD11].
        let k = tokenizer_keys(&files, &config(Architecture::Llama, 12)).unwrap();
        let pre = k.pre.clone().unwrap();
        assert_eq!(
            (pre.name.as_str(), pre.method),
            ("smollm", pretokenizer::PreMethod::Regex)
        );
        let m = Meta(k.keys);
        assert_eq!(m.get("tokenizer.ggml.model"), Some(&Value::from("gpt2")));
        assert_eq!(m.get("tokenizer.ggml.pre"), Some(&Value::from("smollm")));
        let tokens = strings(&m, "tokenizer.ggml.tokens");
        assert_eq!(tokens.len(), 12);
        assert_eq!(tokens[7], "Ġab");
        assert_eq!(&tokens[10..], ["[PAD10]", "[PAD11]"]);
        assert_eq!(
            m.get("tokenizer.ggml.token_type"),
            Some(&Value::Array(Array::I32(vec![
                3, 3, 3, 1, 1, 1, 1, 1, 1, 4, 5, 5
            ])))
        );
        assert_eq!(strings(&m, "tokenizer.ggml.merges"), ["a b", "Ġ ab"]);
        for (key, want) in [
            ("tokenizer.ggml.bos_token_id", 1u32),
            ("tokenizer.ggml.eos_token_id", 2),
            ("tokenizer.ggml.unknown_token_id", 0),
            ("tokenizer.ggml.padding_token_id", 2),
        ] {
            assert_eq!(m.get(key), Some(&Value::U32(want)), "{key}");
        }
        assert_eq!(
            m.get("tokenizer.ggml.add_bos_token"),
            Some(&Value::Bool(false))
        );
        assert_eq!(
            m.get("tokenizer.ggml.add_eos_token"),
            Some(&Value::Bool(false))
        );
        assert_eq!(
            m.get("tokenizer.ggml.add_space_prefix"),
            Some(&Value::Bool(false))
        );
        assert_eq!(
            m.get("tokenizer.chat_template").and_then(|v| v.as_str()),
            Some("{% for m in messages %}{{ m.content }}{% endfor %}")
        );
        // qwen2: no add_space_prefix (llama.cpp sets it for llama only).
        let k = tokenizer_keys(&files, &config(Architecture::Qwen2, 12)).unwrap();
        assert!(Meta(k.keys)
            .get("tokenizer.ggml.add_space_prefix")
            .is_none());
    }

    #[test]
    fn pad_placeholders_are_unused() {
        assert!(is_pad_placeholder("[PAD12]", 12));
        assert!(!is_pad_placeholder("[PAD12]", 13));
        assert!(!is_pad_placeholder("[PAD]", 0));
        let dir = tempfile::tempdir().unwrap();
        write_gpt2_folder(dir.path());
        let mut files = TokenizerFiles::read(dir.path()).unwrap();
        files.tokenizer["model"]["vocab"]["[PAD10]"] = json!(10);
        let m = Meta(
            tokenizer_keys(&files, &config(Architecture::Llama, 11))
                .unwrap()
                .keys,
        );
        let Some(Value::Array(Array::I32(types))) = m.get("tokenizer.ggml.token_type") else {
            panic!("token types")
        };
        assert_eq!(types[10], TOKEN_UNUSED);
    }

    #[test]
    fn template_post_processor_adds_bos() {
        let dir = tempfile::tempdir().unwrap();
        write_gpt2_folder(dir.path());
        let mut files = TokenizerFiles::read(dir.path()).unwrap();
        files.tokenizer["post_processor"] = json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [], "special_tokens": {}});
        let m = Meta(
            tokenizer_keys(&files, &config(Architecture::Llama, 10))
                .unwrap()
                .keys,
        );
        assert_eq!(
            m.get("tokenizer.ggml.add_bos_token"),
            Some(&Value::Bool(true))
        );
        assert!(m.get("tokenizer.ggml.add_eos_token").is_none());
    }

    #[test]
    fn sentencepiece_style_bpe_gets_scores_from_merge_ranks() {
        let tok = json!({
            "added_tokens": [
                {"id": 0, "content": "<unk>", "special": true},
                {"id": 1, "content": "<s>", "special": true},
                {"id": 2, "content": "</s>", "special": true}],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
            "pre_tokenizer": null,
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [], "special_tokens": {}},
            "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]},
            "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>",
                "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x41>": 3, "▁": 4, "a": 5, "b": 6, "ab": 7, "▁ab": 8},
                "merges": ["a b", "▁ ab"]}
        });
        let files = TokenizerFiles {
            origin: PathBuf::from("/nonexistent"),
            tokenizer: tok,
            tokenizer_config: Some(
                json!({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
            ),
            config: None,
            chat_template_file: None,
        };
        let k = tokenizer_keys(&files, &config(Architecture::Llama, 9)).unwrap();
        assert!(k.pre.is_none());
        let m = Meta(k.keys);
        assert_eq!(m.get("tokenizer.ggml.model"), Some(&Value::from("llama")));
        assert_eq!(m.get("tokenizer.ggml.pre"), Some(&Value::from("default")));
        assert_eq!(
            m.get("tokenizer.ggml.token_type"),
            Some(&Value::Array(Array::I32(vec![2, 3, 3, 6, 1, 1, 1, 1, 1])))
        );
        let u = -3.0;
        assert_eq!(
            m.get("tokenizer.ggml.scores"),
            Some(&Value::Array(Array::F32(vec![
                u, u, u, u, u, u, u, 0.0, -1.0
            ])))
        );
        assert_eq!(
            m.get("tokenizer.ggml.add_bos_token"),
            Some(&Value::Bool(true))
        );
        assert_eq!(
            m.get("tokenizer.ggml.unknown_token_id"),
            Some(&Value::U32(0))
        );
        // The same tokenizer under qwen2 goes the byte-level way, which cannot place its
        // pre-tokenizer: the error names tokenizer.json.
        let e = tokenizer_keys(&files, &config(Architecture::Qwen2, 9))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tokenizer.json") && e.contains("pre-tokenizer"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = TokenizerFiles::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("tokenizer.json") && !e.contains('\n'), "{e}");
        std::fs::write(dir.path().join("tokenizer.json"), "{not json").unwrap();
        let e = TokenizerFiles::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("tokenizer.json") && e.contains("JSON"), "{e}");
        write_gpt2_folder(dir.path());
        let files = TokenizerFiles::read(dir.path()).unwrap();
        let e = tokenizer_keys(&files, &config(Architecture::Llama, 5))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tokenizer.json") && e.contains("vocab_size 5"),
            "{e}"
        );
    }
}
