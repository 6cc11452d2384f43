//! Writer -> reader round trips: every value type, several tensor types, bytes identical on rewrite.

mod gguf_support;

use athena::container::gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value};
use gguf_support::*;

/// Rewrites `f` through the writer (same metadata, tensors and data) to `path`.
fn rewrite(f: &GgufFile, path: &std::path::Path) {
    let mut w = GgufWriter::new(path);
    for (k, v) in f.metadata() {
        w.add_metadata(k, v.clone()).unwrap();
    }
    for t in &f.tensors {
        w.add_tensor(t.name.clone(), &t.dims, t.ggml_type).unwrap();
    }
    for t in &f.tensors {
        w.write_tensor_data(&t.name, f.tensor_data(t)).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn round_trip_every_value_type_and_tensor_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.gguf");
    write_sample(&path, None);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    assert_eq!(f.data_offset % 32, 0);
    assert_eq!(f.metadata_vec(), all_value_types());
    assert!(
        f.get("general.alignment").is_none(),
        "default alignment is not written"
    );
    assert_eq!(f.tensors.len(), sample_tensors().len());
    let mut expected_offset = 0;
    for (i, (name, dims, ty)) in sample_tensors().into_iter().enumerate() {
        let t = f.tensor(name).unwrap();
        assert_eq!(t.dims, dims);
        assert_eq!(t.ggml_type, ty);
        assert_eq!(t.offset, expected_offset);
        assert_eq!(t.size_bytes, ty.tensor_size(&dims).unwrap());
        assert_eq!(
            f.tensor_data(t),
            &sample_data(i, t.size_bytes)[..],
            "{name}"
        );
        expected_offset = (t.offset + t.size_bytes).div_ceil(32) * 32;
    }
    // The writer pads after the last tensor too.
    assert_eq!(f.file_len(), f.data_offset + expected_offset);

    let again = dir.path().join("again.gguf");
    rewrite(&f, &again);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&again).unwrap()
    );
}

#[test]
fn block_sizes_of_written_types() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.gguf");
    write_sample(&path, None);
    let f = GgufFile::open(&path).unwrap();
    let size = |n: &str| f.tensor(n).unwrap().size_bytes;
    assert_eq!(size("token_embd.weight"), 8 * 3 * 4);
    assert_eq!(size("blk.0.attn_q.weight"), 6 * 2 * 2 * 2);
    assert_eq!(size("blk.0.attn_k.weight"), 5 * 3 * 2); // BF16: 2 bytes, not 4
    assert_eq!(size("blk.0.attn_q.weight.athena_idx"), 13 * 3); // I8: 1 byte
    assert_eq!(size("blk.0.ids"), 7 * 4);
    assert_eq!(size("blk.0.ffn_up.weight"), 2 * 2 * 34); // Q8_0: 34 bytes per 32
    assert_eq!(size("blk.0.ffn_down.weight"), 2 * 144);
    assert_eq!(size("output_norm.weight"), 6);
}

#[test]
fn round_trip_with_custom_alignment() {
    let dir = tempfile::tempdir().unwrap();
    for align in [1u32, 8, 64, 4096] {
        let path = dir.path().join(format!("a{align}.gguf"));
        write_sample(&path, Some(align));
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.alignment, align as u64);
        assert_eq!(f.get_u32("general.alignment").unwrap(), align);
        for t in &f.tensors {
            assert_eq!(t.offset % align as u64, 0);
        }
        assert_eq!(f.file_len() % align as u64, 0);
        let again = dir.path().join(format!("b{align}.gguf"));
        rewrite(&f, &again);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&again).unwrap()
        );
    }
}

#[test]
fn metadata_only_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vocab.gguf");
    let mut w = GgufWriter::new(&path);
    w.add_metadata("general.name", "x").unwrap();
    w.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert!(f.tensors.is_empty());
    assert_eq!(f.get_str("general.name").unwrap(), "x");
    assert_eq!(f.file_len(), f.data_offset);
}

#[test]
fn empty_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.gguf");
    std::fs::write(&path, b"").unwrap();
    let e = GgufFile::open(&path).unwrap_err();
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    let e = GgufFile::open(&dir.path().join("missing.gguf")).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }), "{e}");
    assert!(e.to_string().starts_with("opening '"), "{e}");
}

#[test]
fn chunked_writes_equal_whole_writes() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.gguf");
    write_sample(&whole, None);
    let chunked = dir.path().join("chunked.gguf");
    let mut w = GgufWriter::new(&chunked);
    for (k, v) in all_value_types() {
        w.add_metadata(k, v).unwrap();
    }
    for (name, dims, ty) in sample_tensors() {
        w.add_tensor(name, &dims, ty).unwrap();
    }
    for (i, (name, _, _)) in sample_tensors().into_iter().enumerate() {
        let data = sample_data(i, w.tensor_size(name).unwrap());
        w.begin_tensor(name).unwrap();
        for c in data.chunks(5) {
            w.write_chunk(c).unwrap();
        }
        w.end_tensor().unwrap();
    }
    w.finish().unwrap();
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&chunked).unwrap()
    );
}

#[test]
fn typed_getters_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.gguf");
    write_sample(&path, None);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.get_u32("t.u8").unwrap(), 200);
    assert_eq!(f.get_u64("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_i64("t.i16").unwrap(), -30000);
    assert_eq!(f.get_f32("t.f32").unwrap(), -1.5e-3);
    assert!(f.get_bool("t.bool_true").unwrap());
    assert_eq!(f.get_string_array("t.arr_string").unwrap()[2], "日本");
    assert_eq!(
        f.get_u32("t.string").unwrap_err().to_string(),
        "key 't.string': expected u32, found string"
    );
    assert_eq!(
        f.get_u32("t.u64").unwrap_err().to_string(),
        "key 't.u64': expected u32, found u64"
    );
    assert_eq!(
        f.get_str("t.arr_u32").unwrap_err().to_string(),
        "key 't.arr_u32': expected string, found array of u32"
    );
    assert_eq!(
        f.get_u32("nope").unwrap_err().to_string(),
        "key 'nope': missing"
    );
}

#[test]
fn writer_validates_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new(dir.path().join("w.gguf"));
    let long = "x".repeat(64);
    assert!(matches!(
        w.add_tensor(long.as_str(), &[1], GgmlType::F32),
        Err(GgufError::NameTooLong { len: 64, .. })
    ));
    w.add_tensor("x".repeat(63), &[1], GgmlType::F32).unwrap();
    w.add_tensor("t", &[32], GgmlType::Q8_0).unwrap();
    assert!(matches!(
        w.add_tensor("t", &[32], GgmlType::Q8_0),
        Err(GgufError::DuplicateTensor { .. })
    ));
    assert!(matches!(
        w.add_tensor("u", &[1, 1, 1, 1, 1], GgmlType::F32),
        Err(GgufError::BadDimCount { n_dims: 5, .. })
    ));
    assert!(matches!(
        w.add_tensor("u", &[], GgmlType::F32),
        Err(GgufError::BadDimCount { n_dims: 0, .. })
    ));
    assert!(matches!(
        w.add_tensor("u", &[4, 0], GgmlType::F32),
        Err(GgufError::ZeroDim { index: 1, .. })
    ));
    assert!(matches!(
        w.add_tensor("u", &[48], GgmlType::Q8_0),
        Err(GgufError::BlockSizeMismatch { ne0: 48, .. })
    ));
    assert!(matches!(
        w.add_tensor("u", &[u64::MAX, 2], GgmlType::F32),
        Err(GgufError::SizeOverflow { .. })
    ));
    assert!(matches!(
        w.set_alignment(48),
        Err(GgufError::BadAlignment { alignment: 48 })
    ));
    assert!(matches!(
        w.set_alignment(0),
        Err(GgufError::BadAlignment { alignment: 0 })
    ));
    assert!(matches!(
        w.add_metadata("general.alignment", 64u64),
        Err(GgufError::WrongType { .. })
    ));
    w.add_metadata("k", 1u8).unwrap();
    assert!(matches!(
        w.add_metadata("k", 2u8),
        Err(GgufError::DuplicateKey { .. })
    ));
    // Data order and length.
    let e = w.write_tensor_data("t", &[0; 34]).unwrap_err();
    assert!(matches!(e, GgufError::OutOfOrder { .. }), "{e}");
    let first = "x".repeat(63);
    let e = w.write_tensor_data(&first, &[0; 3]).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("tensor '{first}': got 3 bytes of data, expected 4")
    );
    w.write_tensor_data(&first, &[0; 4]).unwrap();
    assert!(matches!(
        w.add_metadata("late", 1u8),
        Err(GgufError::HeaderAlreadyWritten { .. })
    ));
    w.begin_tensor("t").unwrap();
    w.write_chunk(&[0; 30]).unwrap();
    assert!(matches!(
        w.write_chunk(&[0; 5]),
        Err(GgufError::WrongDataLength {
            got: 35,
            expected: 34,
            ..
        })
    ));
    assert!(matches!(
        w.end_tensor(),
        Err(GgufError::WrongDataLength { got: 30, .. })
    ));
}

#[test]
fn unfinished_writer_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let mut w = GgufWriter::new(&out);
    w.add_tensor("a", &[4], GgmlType::F32).unwrap();
    w.add_tensor("b", &[4], GgmlType::F32).unwrap();
    w.write_tensor_data("a", &[1; 16]).unwrap();
    let tmp = w.temp_path().to_path_buf();
    assert!(tmp.exists());
    assert!(tmp
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("out.gguf.tmp-"));
    let e = w.finish().unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor 'b': no data was written before finish"
    );
    assert!(!tmp.exists());
    assert!(!out.exists());

    // A panic while writing also leaves nothing.
    let out2 = dir.path().join("out2.gguf");
    let r = std::panic::catch_unwind(|| {
        let mut w = GgufWriter::new(&out2);
        w.add_tensor("a", &[4], GgmlType::F32).unwrap();
        w.write_header().unwrap();
        panic!("interrupted");
    });
    assert!(r.is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn value_conversions() {
    assert_eq!(Value::from(3u32).as_u64(), Some(3));
    assert_eq!(Value::from(vec![1u16, 2]).as_array().unwrap().len(), 2);
}
