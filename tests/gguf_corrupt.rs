//! One test per corruption class; each asserts the specific error variant and, where it matters, the
//! exact one-line message.

mod gguf_support;

use athena::container::gguf::{GgufError, GgufFile};
use gguf_support::*;

fn err(bytes: Vec<u8>) -> GgufError {
    match GgufFile::from_bytes(bytes) {
        Ok(f) => panic!("expected an error, parsed {f:?}"),
        Err(e) => {
            let s = e.to_string();
            assert!(!s.contains('\n'), "message is not one line: {s}");
            e
        }
    }
}

#[test]
fn the_valid_base_file_parses() {
    let f = GgufFile::from_bytes(valid_two_tensor_file()).unwrap();
    assert_eq!(f.data_offset, 192);
    assert_eq!(f.tensors[1].offset, 32);
    assert_eq!(f.tensor_data(&f.tensors[1]).len(), 5);
    assert_eq!(f.get_u32("test.answer").unwrap(), 42);
}

#[test]
fn truncated_in_header() {
    let b = valid_two_tensor_file();
    let e = err(b[..2].to_vec());
    assert_eq!(
        e.to_string(),
        "header field 'magic': needs 4 bytes at byte 0 but the file has 2 bytes"
    );
    let e = err(b[..10].to_vec());
    assert_eq!(
        e.to_string(),
        "header field 'n_tensors': needs 8 bytes at byte 8 but the file has 10 bytes"
    );
    let e = err(b[..20].to_vec());
    assert!(matches!(&e, GgufError::Truncated { what, .. } if what == "header field 'n_kv'"));
}

#[test]
fn truncated_in_kv() {
    let long = "x".repeat(200);
    let mut r = Raw::header(3, 1, 1);
    r.kv_str("general.name", &long)
        .ti(b"a", &[4], 0, 0)
        .pad(32)
        .data(16);
    let b = r.done();
    // Cut inside the string value: header 24 + key 8+12 + type 4 + length 8 = 56, then 200 bytes.
    let e = err(b[..150].to_vec());
    assert_eq!(
        e.to_string(),
        "key 'general.name' value: needs 200 bytes at byte 56 but the file has 150 bytes"
    );
    // Cut inside the key name (a file without tensors, so that the counts stay plausible).
    let mut r = Raw::header(3, 0, 1);
    r.kv_str("general.name", &long);
    let e = err(r.done()[..40].to_vec());
    assert!(
        matches!(&e, GgufError::Truncated { what, .. } if what == "key #0 name"),
        "{e}"
    );
}

#[test]
fn truncated_in_tensor_infos() {
    let name = "blk.0.attn_q.weight.with.a.rather.long.name.for.this.test";
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("k", 1)
        .ti(name.as_bytes(), &[4, 4], 0, 0)
        .pad(32)
        .data(64);
    let b = r.done();
    // header 24 + kv 8+1+4+4 = 41; tensor name 8 + len, n_dims 4, then ne[0] at 41+8+len+4.
    let ne1 = 41 + 8 + name.len() + 4 + 8;
    let e = err(b[..ne1 + 3].to_vec());
    assert_eq!(
        e.to_string(),
        format!(
            "tensor '{name}' ne[1]: needs 8 bytes at byte {ne1} but the file has {} bytes",
            ne1 + 3
        )
    );
}

#[test]
fn truncated_in_data() {
    let b = valid_two_tensor_file();
    // "b" occupies [224, 229).
    let e = err(b[..228].to_vec());
    assert_eq!(
        e.to_string(),
        "tensor 'b': data ends at byte 229 but the file has 228 bytes"
    );
    let e = err(b[..200].to_vec());
    assert!(
        matches!(&e, GgufError::DataOutOfBounds { name, end: 224, file_len: 200 } if name == "a")
    );
    // Trailing padding after the last tensor is not required by the reader.
    GgufFile::from_bytes(b[..229].to_vec()).unwrap();
}

#[test]
fn bad_magic() {
    let mut b = valid_two_tensor_file();
    b[..4].copy_from_slice(b"GGML");
    let e = err(b);
    assert!(matches!(&e, GgufError::BadMagic { found } if found == b"GGML"));
    assert!(e.to_string().starts_with("header: bad magic"), "{e}");
}

#[test]
fn bad_version() {
    for (v, hint) in [
        (1u32, "version 1 is not supported"),
        (4, "only 2 and 3 are read"),
        (0, "only 2 and 3 are read"),
        (3u32.swap_bytes(), "big-endian"),
    ] {
        let mut b = valid_two_tensor_file();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        let e = err(b);
        assert!(
            matches!(e, GgufError::UnsupportedVersion { version, .. } if version == v),
            "{e}"
        );
        assert!(e.to_string().contains(hint), "{e}");
    }
    // Version 2 has the same little-endian layout and is read.
    let mut b = valid_two_tensor_file();
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(GgufFile::from_bytes(b).unwrap().version, 2);
}

#[test]
fn bad_offset_gap() {
    let b = two_tensor_file((b"a", &[4, 2], 0, 0), (b"b", &[5], 24, 64), 32, 5);
    let e = err(b);
    assert_eq!(
        e.to_string(),
        "tensor 'b': data offset 64, expected 32 (the previous data end padded to the alignment)"
    );
    // The first tensor must start at 0.
    let b = two_tensor_file((b"a", &[4, 2], 0, 32), (b"b", &[5], 24, 64), 32, 5);
    assert!(matches!(
        err(b),
        GgufError::UnexpectedOffset {
            offset: 32,
            expected: 0,
            ..
        }
    ));
    // Absurd offset.
    let b = two_tensor_file(
        (b"a", &[4, 2], 0, 0),
        (b"b", &[5], 24, u64::MAX - 31),
        32,
        5,
    );
    assert!(matches!(err(b), GgufError::UnexpectedOffset { .. }));
}

#[test]
fn misaligned_offset() {
    let b = two_tensor_file((b"a", &[4, 2], 0, 0), (b"b", &[5], 24, 33), 32, 5);
    let e = err(b);
    assert_eq!(
        e.to_string(),
        "tensor 'b': data offset 33 is not a multiple of the alignment 32"
    );
    let b = two_tensor_file((b"a", &[4, 2], 0, 0), (b"b", &[5], 24, u64::MAX), 32, 5);
    assert!(matches!(err(b), GgufError::MisalignedOffset { .. }));
}

#[test]
fn overlapping_tensors() {
    // "a" is 9 f32 = 36 bytes, so "b" at 32 overlaps it.
    let b = two_tensor_file((b"a", &[9], 0, 0), (b"b", &[5], 24, 32), 64, 5);
    let e = err(b);
    assert_eq!(
        e.to_string(),
        "tensor 'b': data offset 32 overlaps tensor 'a', which ends at 36"
    );
    // Both at 0.
    let b = two_tensor_file((b"a", &[4, 2], 0, 0), (b"b", &[5], 24, 0), 32, 5);
    assert!(matches!(
        err(b),
        GgufError::OverlappingTensor { offset: 0, .. }
    ));
}

#[test]
fn unknown_ggml_type_id() {
    for id in [4u32, 31, 36, 42, u32::MAX] {
        let b = two_tensor_file((b"a", &[4, 2], 0, 0), (b"b", &[5], id, 32), 32, 5);
        let e = err(b);
        assert_eq!(
            e.to_string(),
            format!("tensor 'b': unknown ggml type id {id}")
        );
    }
}

#[test]
fn unknown_value_type() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k.x").u32(13).u32(0);
    let e = err(r.done());
    assert_eq!(e.to_string(), "key 'k.x': unknown value type id 13");
    // Unknown array element type.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k.arr").u32(9).u32(99).u64(0).pad(32);
    assert!(matches!(
        err(r.done()),
        GgufError::UnknownValueType { type_id: 99, .. }
    ));
}

#[test]
fn wrong_key_type_for_alignment() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"general.alignment").u32(10).u64(64).pad(64);
    let e = err(r.done());
    assert_eq!(
        e.to_string(),
        "key 'general.alignment': expected u32, found u64"
    );
    let mut r = Raw::header(3, 0, 1);
    r.kv_str("general.alignment", "32");
    assert!(matches!(err(r.done()), GgufError::WrongType { .. }));
}

#[test]
fn non_power_of_two_alignment() {
    for a in [0u32, 3, 48, u32::MAX] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", a).pad(64);
        let e = err(r.done());
        assert_eq!(
            e.to_string(),
            format!("key 'general.alignment': {a} is not a power of two")
        );
    }
    // A valid non-default alignment moves the data section and offsets.
    let mut r = Raw::header(3, 2, 1);
    r.kv_u32("general.alignment", 64)
        .ti(b"a", &[3], 0, 0)
        .ti(b"b", &[3], 0, 64)
        .pad(64)
        .data(12)
        .pad(64)
        .data(12);
    let f = GgufFile::from_bytes(r.done()).unwrap();
    assert_eq!((f.alignment, f.data_offset % 64), (64, 0));
}

#[test]
fn name_longer_than_63_bytes() {
    let n63 = vec![b'n'; 63];
    let b = two_tensor_file((&n63, &[4, 2], 0, 0), (b"b", &[5], 24, 32), 32, 5);
    GgufFile::from_bytes(b).unwrap();
    let n64 = vec![b'n'; 64];
    let b = two_tensor_file((&n64, &[4, 2], 0, 0), (b"b", &[5], 24, 32), 32, 5);
    let e = err(b);
    assert!(matches!(e, GgufError::NameTooLong { len: 64, .. }));
    assert!(e
        .to_string()
        .ends_with("name is 64 bytes, at most 63 are allowed"));
}

#[test]
fn invalid_utf8_name() {
    let b = two_tensor_file((b"a\xff", &[4, 2], 0, 0), (b"b", &[5], 24, 32), 32, 5);
    assert_eq!(err(b).to_string(), "tensor info #0 name: not valid UTF-8");
}

#[test]
fn five_dims() {
    let b = two_tensor_file((b"a", &[2, 1, 1, 1, 4], 0, 0), (b"b", &[5], 24, 32), 32, 5);
    let e = err(b);
    assert_eq!(
        e.to_string(),
        "tensor 'a': 5 dimensions, 1 to 4 are allowed"
    );
    let b = two_tensor_file((b"a", &[], 0, 0), (b"b", &[5], 24, 32), 32, 5);
    assert!(matches!(err(b), GgufError::BadDimCount { n_dims: 0, .. }));
    let b = two_tensor_file((b"a", &[8, 0], 0, 0), (b"b", &[5], 24, 32), 32, 5);
    assert!(matches!(err(b), GgufError::ZeroDim { index: 1, .. }));
}

#[test]
fn ne0_not_multiple_of_block_size() {
    // Q8_0 (id 8) has blocks of 32 elements.
    let b = two_tensor_file((b"a", &[16, 2], 8, 0), (b"b", &[5], 24, 96), 96, 5);
    let e = err(b);
    assert_eq!(
        e.to_string(),
        "tensor 'a': ne[0] = 16 is not a multiple of the Q8_0 block size 32"
    );
}

#[test]
fn duplicate_key() {
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("k", 1).kv_u32("k", 2).pad(32);
    assert_eq!(err(r.done()).to_string(), "key 'k': duplicate key");
}

#[test]
fn duplicate_tensor_name() {
    let b = two_tensor_file((b"a", &[4, 2], 0, 0), (b"a", &[5], 24, 32), 32, 5);
    assert_eq!(err(b).to_string(), "tensor 'a': duplicate tensor name");
}

#[test]
fn nested_array() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k.nested")
        .u32(9)
        .u32(9)
        .u64(1)
        .u32(4)
        .u64(1)
        .u32(7)
        .pad(32);
    assert_eq!(
        err(r.done()).to_string(),
        "key 'k.nested': nested arrays are not allowed"
    );
}

#[test]
fn invalid_bool() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k.b").u32(7).u8(2).pad(32);
    assert_eq!(
        err(r.done()).to_string(),
        "key 'k.b': bool byte 2 is neither 0 nor 1"
    );
}

#[test]
fn absurd_counts_and_lengths() {
    // Tensor and kv counts.
    let mut b = valid_two_tensor_file();
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = err(b);
    assert!(
        matches!(&e, GgufError::ImplausibleCount { what, count: u64::MAX, .. } if what == "header field 'n_kv'"),
        "{e}"
    );
    let mut b = valid_two_tensor_file();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = err(b);
    assert!(
        matches!(&e, GgufError::ImplausibleCount { what, .. } if what == "header field 'n_tensors'"),
        "{e}"
    );
    // Key length.
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).data(64);
    let e = err(r.done());
    assert!(
        matches!(&e, GgufError::Truncated { what, need: u64::MAX, .. } if what == "key #0 name"),
        "{e}"
    );
    // String value length.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"s").u32(8).u64(u64::MAX).data(64);
    assert!(matches!(
        err(r.done()),
        GgufError::Truncated { need: u64::MAX, .. }
    ));
    // Array lengths, fixed-size and string elements.
    for elem in [0u32, 10, 8] {
        let mut r = Raw::header(3, 0, 1);
        r.str(b"arr").u32(9).u32(elem).u64(u64::MAX).data(64);
        let e = err(r.done());
        assert!(
            matches!(&e, GgufError::ImplausibleCount { what, count: u64::MAX, .. } if what == "key 'arr' array length"),
            "{e}"
        );
    }
    // Tensor name length.
    let mut r = Raw::header(3, 1, 0);
    r.u64(u64::MAX).data(64);
    assert!(matches!(
        err(r.done()),
        GgufError::Truncated { need: u64::MAX, .. }
    ));
    // Dims whose product overflows.
    let b = two_tensor_file(
        (b"a", &[u64::MAX, u64::MAX], 0, 0),
        (b"b", &[5], 24, 32),
        32,
        5,
    );
    assert_eq!(
        err(b).to_string(),
        "tensor 'a': element count or byte size overflows"
    );
    // Element count beyond i64 (ggml's ne type), byte size beyond u64.
    let b = two_tensor_file(
        (b"a", &[1 << 32, 1 << 31], 24, 0),
        (b"b", &[5], 24, 32),
        32,
        5,
    );
    assert!(matches!(err(b), GgufError::SizeOverflow { .. }));
    let b = two_tensor_file((b"a", &[1 << 62], 0, 0), (b"b", &[5], 24, 32), 32, 5);
    assert!(matches!(err(b), GgufError::SizeOverflow { .. }));
    // A huge but representable tensor is simply out of bounds.
    let b = two_tensor_file((b"a", &[1 << 40], 0, 0), (b"b", &[5], 24, 32), 32, 5);
    assert!(matches!(err(b), GgufError::DataOutOfBounds { .. }));
}

#[test]
fn names_with_control_characters_stay_on_one_line() {
    // Found by the fuzzer (fixtures/gguf-regressions/crash-7ef986b9923573ae.gguf).
    let mut r = Raw::header(3, 0, 1);
    r.str(b"bad\nkey\x00").u32(77).pad(32);
    assert_eq!(
        err(r.done()).to_string(),
        "key 'bad\\nkey\\u{0}': unknown value type id 77"
    );
    let long = "k".repeat(1000);
    let mut r = Raw::header(3, 0, 1);
    r.str(long.as_bytes()).u32(77).pad(32);
    let s = err(r.done()).to_string();
    assert!(
        s.len() < 300 && s.ends_with("... (1000 bytes in all)': unknown value type id 77"),
        "{s}"
    );
}
