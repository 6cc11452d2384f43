//! Encoding quantized layers as Athena weights (format-spec/athena-encoding.md). Reading,
//! validating and the component layout live in the `athena-gguf` crate, re-exported here.

pub use athena_gguf::athena::*;

use athena_decode::Parts;

use crate::quantizer::QuantizedLinear;

/// Encodes a quantized layer as the weight `name` (spec section 3).
pub fn encode(name: &str, q: &QuantizedLinear) -> EncodedWeight {
    let cfg = &q.config;
    let (rows, cols) = (q.vq.rows, q.vq.cols);
    let params = cfg.encoding_params(rows, cols);
    let halves = |v: &[half::f16]| {
        v.iter()
            .flat_map(|h| h.to_bits().to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let indices = pack_indices(&q.vq.indices, rows, cols.div_ceil(cfg.d), cfg.index_bits());
    let codebook: Vec<u8> =
        q.vq.codebooks
            .iter()
            .flat_map(|c| c.bytes.iter().copied())
            .collect();
    let scales: Vec<u8> =
        q.vq.codebooks
            .iter()
            .flat_map(|c| c.scales.iter().flat_map(|s| s.to_le_bytes()))
            .collect();
    let (lowrank_a, lowrank_b) = q.lowrank.as_ref().map_or((Vec::new(), Vec::new()), |lr| {
        (halves(&lr.a), halves(&lr.b))
    });
    let signs = q.rotation.as_ref().map_or(&[][..], |r| &r.signs[..]);
    let row_scales = halves(&q.vq.row_scales);
    let parts = Parts {
        indices: &indices,
        codebook: &codebook,
        scales: &scales,
        lowrank_a: &lowrank_a,
        lowrank_b: &lowrank_b,
        signs,
        row_scales: &row_scales,
    };
    EncodedWeight::from_parts(name, params, parts)
}
