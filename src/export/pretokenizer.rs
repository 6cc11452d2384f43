//! Which llama.cpp pre-tokenizer (`tokenizer.ggml.pre`) a byte-level BPE `tokenizer.json` uses.
//!
//! Two methods, tried in this order:
//! 1. **Hash**, as llama.cpp's `convert_hf_to_gguf.py` (`get_vocab_base_pre`) does: tokenize the fixed
//!    text [`CHECK_TEXT`] (adding special tokens, like `AutoTokenizer.encode`), format the ids as
//!    Python prints a list (`[1, 2, 3]`), SHA-256 it, and look the digest up in [`KNOWN_HASHES`]
//!    (the entries of llama.cpp's table whose names our tokenizer rebuild also supports). This
//!    identifies a tokenizer exactly, vocabulary included, so it only knows published tokenizers.
//! 2. **Regex**: the pre-tokenizer of `tokenizer.json` is reduced to its list of split regexes
//!    (`Split` patterns; `ByteLevel` with `use_regex` is the GPT-2 regex; `Digits` with
//!    `individual_digits` is `\p{N}`; `(?i:'s|...)` is spelled out as llama.cpp does) and compared
//!    with llama.cpp's own regex lists ([`PRE_TOKENIZERS`]). Names sharing the regexes are told apart
//!    by the NFC normalizer and `clean_up_tokenization_spaces` (e.g. smollm vs starcoder). This
//!    covers a re-built tokenizer (e.g. our GGUF -> HF materialisation) whose vocabulary differs.

use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::checkpoint::vocab::{PreTokenizer, GPT2_REGEX, PRE_TOKENIZERS};

/// llama.cpp's check text (`chktxt` in `convert_hf_to_gguf.py`).
pub const CHECK_TEXT: &str = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\u{1f680} (normal) \u{1f636}\u{200d}\u{1f32b}\u{fe0f} (multiple emojis concatenated) \u{2705} \u{1f999}\u{1f999} 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 \u{1780}\u{17b6}\u{1793}\u{17cb}\u{178f}\u{17c2}\u{1796}\u{17b7}\u{179f}\u{17c1}\u{179f}\u{17a2}\u{17b6}\u{1785}\u{1f601} ?\u{6211}\u{60f3}\u{5728}apple\u{5de5}\u{4f5c}1314151\u{5929}\u{ff5e} ------======= \u{43d}\u{435}\u{449}\u{43e} \u{43d}\u{430} \u{411}\u{44a}\u{43b}\u{433}\u{430}\u{440}\u{441}\u{43a}\u{438} ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL";

/// (name, digest) from llama.cpp's `get_vocab_base_pre`, in its order; a later entry wins, as in
/// its chain of `if`s (mpt and olmo share a digest: olmo).
pub const KNOWN_HASHES: &[(&str, &str)] = &[
    (
        "minerva-7b",
        "1431a23e583c97432bc230bff598d103ddb5a1f89960c8f1d1051aaa944d0b35",
    ), // sapienzanlp/Minerva-7B-base-v1.0
    (
        "qwen2",
        "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c",
    ), // Qwen/Qwen3-Embedding-0.6B
    (
        "gpt-2",
        "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4",
    ), // evilfreelancer/ruGPT3XL
    (
        "llama-bpe",
        "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5",
    ), // meta-llama/Meta-Llama-3-8B
    (
        "mpt",
        "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166",
    ), // mosaicml/mpt-7b
    (
        "starcoder",
        "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34",
    ), // bigcode/starcoder2-3b
    (
        "gpt-2",
        "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454",
    ), // openai-community/gpt2
    (
        "stablelm2",
        "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3",
    ), // stabilityai/stablelm-2-zephyr-1_6b
    (
        "refact",
        "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff",
    ), // smallcloudai/Refact-1_6-base
    (
        "qwen2",
        "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea",
    ), // Qwen/Qwen1.5-7B (also Qwen2.5)
    (
        "olmo",
        "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166",
    ), // allenai/OLMo-1.7-7B-hf
    (
        "jais",
        "b53802fb28e26d645c3a310b34bfe07da813026ec7c7716883404d5e0f8b1901",
    ), // core42/jais-13b
    (
        "codeshell",
        "7b3e7548e4308f52a76e8229e4e6cc831195d0d1df43aed21ac6c93da05fec5f",
    ), // WisdomShell/CodeShell-7B
    (
        "smollm",
        "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249",
    ), // HuggingFaceTB/SmolLM-135M
    (
        "exaone",
        "4e2b24cc4770243d65a2c9ec19770a72f08cffc161adbb73fcbb6b7dd45a0aae",
    ), // LGAI-EXAONE/EXAONE-3.0-7.8B-Instruct
    (
        "phi-2",
        "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085",
    ), // microsoft/phi-2
    (
        "roberta-bpe",
        "8b5a93ed704057481f240da0be7e7dca721d7f8f4755263b6807227a2cbeae65",
    ), // sentence-transformers/stsb-roberta-base
    (
        "megrez",
        "d4c8f286ea6b520b3d495c4455483cfa2302c0cfcd4be05d781b6a8a0a7cdaf1",
    ), // Infinigence/Megrez-3B-Instruct
    (
        "deepseek-r1-qwen",
        "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5",
    ), // deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B
    (
        "exaone4",
        "2085e1638f6c377a0aa4ead21b27bb4cb941bf800df86ed391011769c1758dfb",
    ), // LGAI-EXAONE/EXAONE-4.0-32B
];

/// How the pre-tokenizer was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreMethod {
    Hash,
    Regex,
}

/// The detected `tokenizer.ggml.pre` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreMatch {
    pub name: String,
    pub method: PreMethod,
    /// The check-text digest (`None` when `tokenizer.json` could not be loaded to tokenize).
    pub hash: Option<String>,
}

/// The llama.cpp check-text digest of a tokenizer, or an error message if it cannot be loaded.
pub fn check_hash(tokenizer_json: &Json) -> Result<String, String> {
    let bytes = serde_json::to_vec(tokenizer_json).map_err(|e| e.to_string())?;
    let tok = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| e.to_string())?;
    let enc = tok.encode(CHECK_TEXT, true).map_err(|e| e.to_string())?;
    let ids: Vec<String> = enc.get_ids().iter().map(|i| i.to_string()).collect();
    let text = format!("[{}]", ids.join(", "));
    Ok(hex(&Sha256::digest(text.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Detects the pre-tokenizer (see the module documentation). `clean_spaces` is
/// `clean_up_tokenization_spaces` from `tokenizer_config.json`, if given. The error lists the
/// supported names and the digest, as llama.cpp's message does.
pub fn detect(tokenizer_json: &Json, clean_spaces: Option<bool>) -> Result<PreMatch, String> {
    let hash = check_hash(tokenizer_json).ok();
    if let Some(h) = &hash {
        if let Some(&(name, _)) = KNOWN_HASHES.iter().rev().find(|(_, d)| d == h) {
            return Ok(PreMatch {
                name: name.to_string(),
                method: PreMethod::Hash,
                hash,
            });
        }
    }
    if let Some(name) = by_regex(tokenizer_json, clean_spaces) {
        return Ok(PreMatch {
            name: name.to_string(),
            method: PreMethod::Regex,
            hash,
        });
    }
    let names: Vec<&str> = PRE_TOKENIZERS
        .iter()
        .flat_map(|p| p.names.iter().copied())
        .collect();
    Err(format!(
        "BPE pre-tokenizer not recognized (check-text digest {}; regexes {:?}); supported: {}",
        hash.as_deref().unwrap_or("unavailable"),
        split_regexes(&tokenizer_json["pre_tokenizer"]).unwrap_or_default(),
        names.join(", ")
    ))
}

/// The regex route of [`detect`]: a name of the best matching [`PRE_TOKENIZERS`] entry.
pub fn by_regex(tokenizer_json: &Json, clean_spaces: Option<bool>) -> Option<&'static str> {
    let regexes = split_regexes(&tokenizer_json["pre_tokenizer"])?;
    let nfc = has_nfc(&tokenizer_json["normalizer"]);
    let candidates: Vec<&PreTokenizer> = PRE_TOKENIZERS
        .iter()
        .filter(|p| p.regexes.len() == regexes.len())
        .filter(|p| p.regexes.iter().zip(&regexes).all(|(a, b)| *a == b))
        .collect();
    let same_nfc: Vec<&PreTokenizer> = candidates
        .iter()
        .copied()
        .filter(|p| p.nfc == nfc)
        .collect();
    let pool = if same_nfc.is_empty() {
        candidates
    } else {
        same_nfc
    };
    let best = match clean_spaces {
        Some(c) => pool
            .iter()
            .find(|p| p.clean_spaces == c)
            .or(pool.first())
            .copied(),
        None => pool.first().copied(),
    };
    // Prefer the name llama.cpp's converter writes (e.g. "llama-bpe" rather than "llama3").
    best.map(|p| {
        p.names
            .iter()
            .copied()
            .find(|n| KNOWN_HASHES.iter().any(|(k, _)| k == n))
            .unwrap_or(p.names[0])
    })
}

/// The split regexes of an HF pre-tokenizer, in order; `None` for a pre-tokenizer we cannot read.
pub fn split_regexes(pre: &Json) -> Option<Vec<String>> {
    let mut out = Vec::new();
    collect_regexes(pre, &mut out)?;
    Some(out)
}

fn collect_regexes(pre: &Json, out: &mut Vec<String>) -> Option<()> {
    match pre["type"].as_str()? {
        "Sequence" => {
            for p in pre["pretokenizers"].as_array()? {
                collect_regexes(p, out)?;
            }
        }
        "Split" => out.push(normalize_regex(pre["pattern"]["Regex"].as_str()?)),
        "ByteLevel" => {
            if pre["use_regex"].as_bool().unwrap_or(true) {
                out.push(GPT2_REGEX.to_string());
            }
        }
        "Digits" if pre["individual_digits"].as_bool() == Some(true) => {
            out.push(r"\p{N}".to_string());
        }
        _ => return None,
    }
    Some(())
}

/// HF writes the case-insensitive contractions as `(?i:'s|'t|'re|'ve|'m|'ll|'d)`; llama.cpp spells
/// them out.
fn normalize_regex(r: &str) -> String {
    r.replace(
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)",
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    )
}

fn has_nfc(normalizer: &Json) -> bool {
    match normalizer["type"].as_str() {
        Some("NFC") => true,
        Some("Sequence") => normalizer["normalizers"]
            .as_array()
            .is_some_and(|ns| ns.iter().any(has_nfc)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::vocab::{LLAMA3_REGEX, QWEN2_REGEX};
    use serde_json::json;

    #[test]
    fn check_text_is_llama_cpps() {
        // sha256 of the UTF-8 check text, computed from convert_hf_to_gguf.py's literal.
        assert_eq!(
            hex(&Sha256::digest(CHECK_TEXT.as_bytes())),
            "a36179c1e2b1cfcfbfad1dc779addad2ffc778201e4cf0d538bddeafa2c526da"
        );
    }

    #[test]
    fn original_hf_pre_tokenizers_by_regex() {
        // SmolLM2's original tokenizer.json pre-tokenizer.
        let smol = json!({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]}});
        assert_eq!(by_regex(&smol, Some(false)), Some("smollm"));
        assert_eq!(by_regex(&smol, Some(true)), Some("starcoder"));
        // Qwen2.5's, with its NFC normalizer.
        let qwen_re = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        let qwen = json!({"normalizer": {"type": "NFC"}, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": qwen_re}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]}});
        assert_eq!(by_regex(&qwen, Some(false)), Some("qwen2"));
        assert_eq!(
            split_regexes(&qwen["pre_tokenizer"]).unwrap(),
            vec![QWEN2_REGEX]
        );
        let mut no_nfc = qwen.clone();
        no_nfc["normalizer"] = Json::Null;
        assert_eq!(by_regex(&no_nfc, Some(true)), Some("stablelm2"));
        let gpt2 = json!({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}});
        assert_eq!(by_regex(&gpt2, None), Some("gpt-2"));
        let llama3 =
            json!({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}}});
        assert_eq!(by_regex(&llama3, None), Some("llama-bpe"));
        let unknown = json!({"pre_tokenizer": {"type": "Whitespace"}});
        assert_eq!(by_regex(&unknown, None), None);
    }
}
