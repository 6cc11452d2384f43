//! gguf-py compatibility: files from our writer must read back identically with the reference Python
//! reader (`from gguf import GGUFReader`), checked by tools/gguf_py_check.py against an expectation JSON
//! built here from the writer's inputs.
//!
//! If python3 or gguf-py is missing the test prints a SKIP line and passes, unless
//! `ATHENA_REQUIRE_GGUF_PY=1` is set (CI), in which case it fails.

mod gguf_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use athena::container::gguf::{Array, GgufFile, Value};
use gguf_support::*;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

fn gguf_py_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import gguf"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("ATHENA_REQUIRE_GGUF_PY").as_deref() == Ok("1") {
            panic!(
                "ATHENA_REQUIRE_GGUF_PY=1 but `python3 -c 'import gguf'` fails (pip install gguf)"
            );
        }
        println!("SKIP gguf_py_compat: python3 with gguf-py not available (pip install gguf; set ATHENA_REQUIRE_GGUF_PY=1 to make this a failure)");
    }
    ok
}

fn json_value(v: &Value) -> (String, Option<&'static str>, Json) {
    let scalar = |v: &Value| -> Json {
        match v {
            Value::U8(x) => json!(x),
            Value::I8(x) => json!(x),
            Value::U16(x) => json!(x),
            Value::I16(x) => json!(x),
            Value::U32(x) => json!(x),
            Value::I32(x) => json!(x),
            Value::F32(x) => json!(*x as f64),
            Value::Bool(x) => json!(x),
            Value::String(x) => json!(x),
            Value::U64(x) => json!(x),
            Value::I64(x) => json!(x),
            Value::F64(x) => json!(x),
            Value::Array(_) => unreachable!("no nested arrays"),
        }
    };
    match v {
        Value::Array(a) => {
            let items: Vec<Json> = match a {
                Array::U8(v) => v.iter().map(|&x| scalar(&Value::U8(x))).collect(),
                Array::I8(v) => v.iter().map(|&x| scalar(&Value::I8(x))).collect(),
                Array::U16(v) => v.iter().map(|&x| scalar(&Value::U16(x))).collect(),
                Array::I16(v) => v.iter().map(|&x| scalar(&Value::I16(x))).collect(),
                Array::U32(v) => v.iter().map(|&x| scalar(&Value::U32(x))).collect(),
                Array::I32(v) => v.iter().map(|&x| scalar(&Value::I32(x))).collect(),
                Array::F32(v) => v.iter().map(|&x| scalar(&Value::F32(x))).collect(),
                Array::Bool(v) => v.iter().map(|&x| scalar(&Value::Bool(x))).collect(),
                Array::String(v) => v.iter().map(|x| json!(x)).collect(),
                Array::U64(v) => v.iter().map(|&x| scalar(&Value::U64(x))).collect(),
                Array::I64(v) => v.iter().map(|&x| scalar(&Value::I64(x))).collect(),
                Array::F64(v) => v.iter().map(|&x| scalar(&Value::F64(x))).collect(),
            };
            (
                "array".into(),
                Some(a.elem_type().name()),
                Json::Array(items),
            )
        }
        v => (v.value_type().name().into(), None, scalar(v)),
    }
}

/// The expectation, from the writer's inputs; only the data section start comes from our reader.
fn expectation(path: &Path, alignment: u64) -> Json {
    let mut metadata: Vec<(String, Value)> = Vec::new();
    if alignment != 32 {
        metadata.push(("general.alignment".into(), Value::U32(alignment as u32)));
    }
    metadata.extend(all_value_types());
    let metadata: Vec<Json> = metadata
        .iter()
        .map(|(k, v)| {
            let (ty, elem, value) = json_value(v);
            let mut m = json!({"key": k, "type": ty, "value": value});
            if let Some(e) = elem {
                m["elem_type"] = json!(e);
            }
            m
        })
        .collect();
    let mut offset = 0u64;
    let tensors: Vec<Json> = sample_tensors()
        .into_iter()
        .enumerate()
        .map(|(i, (name, dims, ty))| {
            let size =
                dims[0] / ty.block_size() * ty.type_size() * dims[1..].iter().product::<u64>();
            let sha: String = Sha256::digest(sample_data(i, size))
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let t = json!({"name": name, "type_id": ty.id(), "shape": dims, "offset": offset,
                           "n_bytes": size, "sha256": sha});
            offset = (offset + size).div_ceil(alignment) * alignment;
            t
        })
        .collect();
    let data_offset = GgufFile::open(path).unwrap().data_offset;
    json!({"version": 3, "alignment": alignment, "data_offset": data_offset,
           "metadata": metadata, "tensors": tensors})
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/gguf_py_check.py")
}

fn run_check(file: &Path, expected: &Path) -> (bool, String) {
    let out = Command::new("python3")
        .arg(script())
        .arg(file)
        .arg(expected)
        .output()
        .expect("running python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn gguf_py_reads_our_files() {
    if !gguf_py_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for alignment in [32u64, 64] {
        let file = dir.path().join(format!("py{alignment}.gguf"));
        write_sample(&file, (alignment != 32).then_some(alignment as u32));
        let expected = dir.path().join(format!("py{alignment}.json"));
        let exp = expectation(&file, alignment);
        std::fs::write(&expected, serde_json::to_string_pretty(&exp).unwrap()).unwrap();
        let (ok, text) = run_check(&file, &expected);
        print!("{text}");
        assert!(ok, "gguf-py disagrees (alignment {alignment}):\n{text}");
    }
}

#[test]
fn the_checker_catches_a_wrong_expectation() {
    if !gguf_py_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.gguf");
    write_sample(&file, None);
    let mut exp = expectation(&file, 32);
    exp["tensors"][3]["sha256"] = json!("00");
    exp["metadata"][5]["value"] = json!(1);
    let expected = dir.path().join("s.json");
    std::fs::write(&expected, exp.to_string()).unwrap();
    let (ok, text) = run_check(&file, &expected);
    assert!(!ok);
    assert!(
        text.contains("MISMATCH tensor 'blk.0.attn_q.weight.athena_idx' sha256"),
        "{text}"
    );
    assert!(text.contains("MISMATCH key 't.u32' value"), "{text}");
}
