//! fixtures/vectors must be exactly what tools/gen_vectors.rs generates (no stale or hand-edited
//! vectors), and the spec's worked examples must match the vectors and the decoder.

mod common;
#[path = "../tools/gen_vectors.rs"]
mod gen_vectors;

use std::fs;

use athena_decode::{CodebookType, Params};

#[test]
fn committed_vectors_match_the_generator() {
    let tmp = tempfile::tempdir().unwrap();
    let count = gen_vectors::generate(tmp.path());
    let committed = common::all();
    assert_eq!(
        count,
        committed.len(),
        "regenerate: cargo run --example gen-vectors"
    );
    for v in &committed {
        let fresh = tmp.path().join(&v.name);
        let old = common::vectors_root().join(&v.name);
        let mut names: Vec<_> = fs::read_dir(&fresh)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        let mut old_names: Vec<_> = fs::read_dir(&old)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        old_names.sort();
        assert_eq!(names, old_names, "{}: file list differs", v.name);
        for name in names {
            assert!(
                fs::read(fresh.join(&name)).unwrap() == fs::read(old.join(&name)).unwrap(),
                "{}/{:?} differs from the generator's output; run cargo run --example gen-vectors",
                v.name,
                name
            );
        }
    }
}

#[test]
fn spec_worked_examples() {
    let v = common::load(&common::vectors_root().join("spec_example"));
    assert_eq!(v.indices, [0xd5, 0x01, 0x73, 0x00]);
    let bits: Vec<u32> = v.expected.iter().map(|x| x.to_bits()).collect();
    assert_eq!(
        bits,
        [
            0x3eb34100, 0x3e002800, 0x3df5e800, 0xbdd6ec00, 0x3f91f380, 0x3f10b480, //
            0x3e972900, 0x3e972800, 0x3f134600, 0x3f134780, 0xbcf3a000, 0x3e14c200,
        ]
    );

    // Section 7: SmolLM2-135M k_proj.
    let p = Params {
        rows: 192,
        cols: 576,
        vector_dim: 2,
        centroids: 256,
        tile_rows: 192,
        tile_cols: 64,
        rank: 2,
        codebook: CodebookType::I8,
        rotation: 0,
        row_scales: false,
    };
    assert_eq!(p.indices_len().unwrap(), 55296);
    assert_eq!(p.codebook_len().unwrap(), 4608);
    assert_eq!(p.scales_len().unwrap(), 72);
    assert_eq!(p.lowrank_a_len().unwrap(), 768);
    assert_eq!(p.lowrank_b_len().unwrap(), 2304);
    assert_eq!(p.total_bytes().unwrap(), 63048);
    let paper = Params {
        tile_cols: 2,
        rank: 0,
        ..p
    };
    assert_eq!(
        paper.codebook_len().unwrap() + paper.scales_len().unwrap(),
        147456 + 2304
    );
}
