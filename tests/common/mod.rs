//! Loading the test vectors of fixtures/vectors/ (layout: fixtures/vectors/README.md).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use athena_decode::{CodebookType, Params};

pub fn vectors_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vectors")
}

/// One vector's files, read into memory.
#[derive(Clone)]
pub struct VectorFiles {
    pub name: String,
    pub params: Params,
    pub indices: Vec<u8>,
    pub codebook: Vec<u8>,
    pub scales: Vec<u8>,
    pub lowrank_a: Vec<u8>,
    pub lowrank_b: Vec<u8>,
    pub expected: Vec<f32>,
}

pub fn parse_params(text: &str) -> Params {
    let mut p = Params {
        rows: 0,
        cols: 0,
        vector_dim: 0,
        centroids: 0,
        tile_rows: 0,
        tile_cols: 0,
        rank: 0,
        codebook: CodebookType::I8,
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let num = || {
            value
                .trim()
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("{key}: {e}"))
        };
        match key.trim() {
            "rows" => p.rows = num(),
            "cols" => p.cols = num(),
            "vector_dim" => p.vector_dim = num() as u32,
            "centroids" => p.centroids = num() as u32,
            "tile_rows" => p.tile_rows = num(),
            "tile_cols" => p.tile_cols = num(),
            "rank" => p.rank = num() as u32,
            "codebook" => p.codebook = CodebookType::from_name(value.trim()).expect("codebook"),
            other => panic!("unknown key {other}"),
        }
    }
    p
}

fn read_opt(dir: &Path, name: &str) -> Vec<u8> {
    fs::read(dir.join(name)).unwrap_or_default()
}

pub fn load(dir: &Path) -> VectorFiles {
    let params = parse_params(&fs::read_to_string(dir.join("params.txt")).expect("params.txt"));
    let expected = read_opt(dir, "expected.f32")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    VectorFiles {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        params,
        indices: fs::read(dir.join("indices.bin")).expect("indices.bin"),
        codebook: fs::read(dir.join("codebook.bin")).expect("codebook.bin"),
        scales: read_opt(dir, "scales.bin"),
        lowrank_a: read_opt(dir, "lowrank_a.bin"),
        lowrank_b: read_opt(dir, "lowrank_b.bin"),
        expected,
    }
}

/// Every vector folder, sorted by name.
pub fn all() -> Vec<VectorFiles> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(vectors_root())
        .expect("fixtures/vectors")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("params.txt").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 20,
        "expected the generated vectors, found {}",
        dirs.len()
    );
    dirs.iter().map(|d| load(d)).collect()
}

impl VectorFiles {
    /// Writes this vector as a folder under `root` (for corrupted copies).
    pub fn write(&self, root: &Path) -> PathBuf {
        let dir = root.join(&self.name);
        fs::create_dir_all(&dir).unwrap();
        let p = &self.params;
        let text = format!(
            "rows={}\ncols={}\nvector_dim={}\ncentroids={}\ntile_rows={}\ntile_cols={}\nrank={}\ncodebook={}\n",
            p.rows, p.cols, p.vector_dim, p.centroids, p.tile_rows, p.tile_cols, p.rank, p.codebook.name()
        );
        fs::write(dir.join("params.txt"), text).unwrap();
        fs::write(dir.join("indices.bin"), &self.indices).unwrap();
        fs::write(dir.join("codebook.bin"), &self.codebook).unwrap();
        fs::write(dir.join("scales.bin"), &self.scales).unwrap();
        fs::write(dir.join("lowrank_a.bin"), &self.lowrank_a).unwrap();
        fs::write(dir.join("lowrank_b.bin"), &self.lowrank_b).unwrap();
        let exp: Vec<u8> = self.expected.iter().flat_map(|x| x.to_le_bytes()).collect();
        fs::write(dir.join("expected.f32"), exp).unwrap();
        dir
    }
}
