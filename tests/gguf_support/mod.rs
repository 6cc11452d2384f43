//! Shared helpers for the GGUF integration tests: a raw byte builder that can express invalid files, and
//! a writer-made sample file.
#![allow(dead_code)]

use athena::container::gguf::{GgmlType, GgufWriter, Value};

/// Little-endian byte builder for hand-made (possibly invalid) GGUF files.
#[derive(Default, Clone)]
pub struct Raw {
    pub buf: Vec<u8>,
}

impl Raw {
    /// Magic, version, n_tensors, n_kv.
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.buf.extend_from_slice(b"GGUF");
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    /// GGUF string: u64 length + bytes.
    pub fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64).bytes(s)
    }
    /// A key with a u32 value.
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key.as_bytes()).u32(4).u32(v)
    }
    /// A key with a string value.
    pub fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.str(key.as_bytes()).u32(8).str(v.as_bytes())
    }
    /// A tensor info.
    pub fn ti(&mut self, name: &[u8], dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Zero padding up to a multiple of `align`.
    pub fn pad(&mut self, align: usize) -> &mut Self {
        while !self.buf.len().is_multiple_of(align) {
            self.buf.push(0);
        }
        self
    }
    /// `n` bytes of data with a recognizable pattern.
    pub fn data(&mut self, n: usize) -> &mut Self {
        self.buf.extend((0..n).map(|i| (i * 7 + 3) as u8));
        self
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn done(&self) -> Vec<u8> {
        self.buf.clone()
    }
}

/// A valid two-tensor file (f32 [4, 2] and i8 [5]) with two keys, built by hand; `mutate` may edit the
/// tensor infos' fields before serialization.
pub fn two_tensor_file(
    ti0: (&[u8], &[u64], u32, u64),
    ti1: (&[u8], &[u64], u32, u64),
    data0: usize,
    data1: usize,
) -> Vec<u8> {
    let mut r = Raw::header(3, 2, 2);
    r.kv_str("general.architecture", "llama")
        .kv_u32("test.answer", 42);
    r.ti(ti0.0, ti0.1, ti0.2, ti0.3);
    r.ti(ti1.0, ti1.1, ti1.2, ti1.3);
    r.pad(32).data(data0).pad(32).data(data1).pad(32);
    r.done()
}

/// The canonical valid hand-made file: "a" f32 [4,2] at 0 (32 bytes), "b" i8 [5] at 32.
pub fn valid_two_tensor_file() -> Vec<u8> {
    two_tensor_file((b"a", &[4, 2], 0, 0), (b"b", &[5], 24, 32), 32, 5)
}

/// Metadata with every value type, scalars and arrays.
pub fn all_value_types() -> Vec<(String, Value)> {
    let v: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::from("llama")),
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(60000)),
        ("t.i16", Value::I16(-30000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.f32", Value::F32(-1.5e-3)),
        ("t.bool_true", Value::Bool(true)),
        ("t.bool_false", Value::Bool(false)),
        ("t.string", Value::from("héllo, wörld ✓")),
        ("t.empty_string", Value::from("")),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("t.arr_u8", Value::from(vec![0u8, 1, 255])),
        ("t.arr_i8", Value::from(vec![-128i8, 0, 127])),
        ("t.arr_u16", Value::from(vec![0u16, 65535])),
        ("t.arr_i16", Value::from(vec![-32768i16, 32767])),
        ("t.arr_u32", Value::from(vec![1u32, 2, 3, u32::MAX])),
        ("t.arr_i32", Value::from(vec![-1i32, i32::MAX])),
        ("t.arr_f32", Value::from(vec![0.25f32, -2.0, 1e30])),
        ("t.arr_bool", Value::from(vec![true, false, true])),
        (
            "t.arr_string",
            Value::from(vec!["a".to_string(), "".to_string(), "日本".to_string()]),
        ),
        ("t.arr_u64", Value::from(vec![0u64, u64::MAX])),
        ("t.arr_i64", Value::from(vec![i64::MIN, i64::MAX])),
        ("t.arr_f64", Value::from(vec![1e-300f64, -0.5])),
        ("t.arr_empty_u32", Value::from(Vec::<u32>::new())),
    ];
    v.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// (name, dims, type) of the sample tensors: several types with correct block sizes.
pub fn sample_tensors() -> Vec<(&'static str, Vec<u64>, GgmlType)> {
    vec![
        ("token_embd.weight", vec![8, 3], GgmlType::F32),
        ("blk.0.attn_q.weight", vec![6, 2, 2], GgmlType::F16),
        ("blk.0.attn_k.weight", vec![5, 3], GgmlType::BF16),
        ("blk.0.attn_q.weight.athena_idx", vec![13, 3], GgmlType::I8),
        ("blk.0.ids", vec![7], GgmlType::I32),
        ("blk.0.ffn_up.weight", vec![64, 2], GgmlType::Q8_0),
        ("blk.0.ffn_down.weight", vec![256, 1, 1, 2], GgmlType::Q4_K),
        ("output_norm.weight", vec![3], GgmlType::I16),
    ]
}

/// Deterministic data for tensor number `i` of `size` bytes.
pub fn sample_data(i: usize, size: u64) -> Vec<u8> {
    (0..size)
        .map(|j| (j.wrapping_mul(31).wrapping_add(i as u64 * 17) % 251) as u8)
        .collect()
}

/// Writes the sample file (all value types, all sample tensors) to `path` with the given alignment.
pub fn write_sample(path: &std::path::Path, alignment: Option<u32>) {
    let mut w = GgufWriter::new(path);
    if let Some(a) = alignment {
        w.set_alignment(a).unwrap();
    }
    for (k, v) in all_value_types() {
        w.add_metadata(k, v).unwrap();
    }
    for (name, dims, ty) in sample_tensors() {
        w.add_tensor(name, &dims, ty).unwrap();
    }
    for (i, (name, _, _)) in sample_tensors().into_iter().enumerate() {
        let size = w.tensor_size(name).unwrap();
        w.write_tensor_data(name, &sample_data(i, size)).unwrap();
    }
    w.finish().unwrap();
}
