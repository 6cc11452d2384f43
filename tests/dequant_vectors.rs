//! Athena's dequantization (candle's block decoders) against gguf-py's, on pseudo-random blocks of
//! every supported quantized type. The fixture is made by tools/make_dequant_fixture.py.

use std::path::Path;

use athena::checkpoint::gguf_source::dequantize;
use athena::container::gguf::{GgmlType, GgufFile};

#[test]
fn every_type_matches_gguf_py_bit_for_bit() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dequant/blocks.gguf");
    let f = GgufFile::open(&path).unwrap();
    let mut checked = Vec::new();
    for t in f.tensors.iter().filter(|t| !t.name.ends_with(".expected")) {
        let exp = f.tensor(&format!("{}.expected", t.name)).unwrap();
        assert_eq!(exp.ggml_type, GgmlType::F32);
        assert_eq!(exp.dims, t.dims);
        let n = t.dims.iter().product::<u64>() as usize;
        let got = dequantize(t.ggml_type, f.tensor_data(t), n).unwrap();
        let want = dequantize(GgmlType::F32, f.tensor_data(exp), n).unwrap();
        let bad = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(bad, 0, "{}: {bad} of {n} elements differ", t.name);
        checked.push(t.ggml_type.name());
    }
    assert_eq!(
        checked,
        [
            "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "F16",
            "BF16"
        ]
    );
}
