//! Single-thread decode throughput of the reference decoder (athena-decode).
//!
//! `cargo run --release --example bench-decode`
//!
//! Builds random tensors of SmolLM2-like shapes, decodes each whole tensor repeatedly with
//! `Encoded::decode_into`, and prints the best time per decode and the f32 output rate.

use athena::quantizer::rng::SplitMix64;
use std::hint::black_box;
use std::time::{Duration, Instant};

use athena_decode::{CodebookType, Encoded, Params, Parts};

/// The project's SplitMix64 (quantizer::rng), with the draws this tool needs.
struct Rng(SplitMix64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    /// Finite, modest f16 values (|x| < 1), little-endian.
    fn f16s(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                let sign = (self.next_u64() as u16 & 1) << 15;
                let exp = 5 + (self.next_u64() % 10) as u16; // 2^-10 .. 2^-1
                let mant = self.next_u64() as u16 & 0x3ff;
                (sign | exp << 10 | mant).to_le_bytes()
            })
            .collect()
    }
}

struct Config {
    rows: u64,
    cols: u64,
    d: u32,
    n: u32,
    tile: (u64, u64),
    rank: u32,
    cb: CodebookType,
    /// Column-rotation block (0: none).
    rotation: u32,
    /// Per-row scales (encoding version 3).
    row_scales: bool,
}

fn bench(c: &Config, rng: &mut Rng) {
    let p = Params {
        rows: c.rows,
        cols: c.cols,
        vector_dim: c.d,
        centroids: c.n,
        tile_rows: c.tile.0,
        tile_cols: c.tile.1,
        rank: c.rank,
        codebook: c.cb,
        rotation: c.rotation,
        row_scales: c.row_scales,
    };
    p.validate().expect("bench config");
    let mut indices = rng.bytes(p.indices_len().unwrap());
    // Clear padding bits so the data passes check().
    let stride = p.row_stride_bytes().unwrap() as usize;
    let used = (p.groups() * p.index_bits() as u64 % 8) as u32;
    if used != 0 {
        for row in indices.chunks_mut(stride) {
            row[stride - 1] &= (1u8 << used) - 1;
        }
    }
    let codebook = match c.cb {
        CodebookType::I8 => rng.bytes(p.codebook_len().unwrap()),
        CodebookType::F16 => rng.f16s(p.codebook_len().unwrap() / 2),
    };
    let scales = rng.f16s(p.scales_len().unwrap() / 2);
    let lowrank_a = rng.f16s(p.lowrank_a_len().unwrap() / 2);
    let lowrank_b = rng.f16s(p.lowrank_b_len().unwrap() / 2);
    let row_scales = rng.f16s(p.row_scales_len().unwrap() / 2);
    let mut signs = rng.bytes(p.signs_len().unwrap());
    if let Some(last) = signs.last_mut() {
        if !c.cols.is_multiple_of(8) {
            *last &= (1u8 << (c.cols % 8)) - 1;
        }
    }
    let enc = Encoded::new(
        p,
        Parts {
            indices: &indices,
            codebook: &codebook,
            scales: &scales,
            lowrank_a: &lowrank_a,
            lowrank_b: &lowrank_b,
            signs: &signs,
            row_scales: &row_scales,
        },
    )
    .unwrap();
    enc.check().unwrap();
    let mut out = vec![0.0f32; p.output_len().unwrap()];
    let mut best = Duration::MAX;
    let start = Instant::now();
    let mut iters = 0;
    while iters < 5 || start.elapsed() < Duration::from_millis(400) {
        let t = Instant::now();
        enc.decode_into(black_box(&mut out)).unwrap();
        black_box(&out);
        best = best.min(t.elapsed());
        iters += 1;
    }
    let ms = best.as_secs_f64() * 1e3;
    let gbs = (out.len() * 4) as f64 / best.as_secs_f64() / 1e9;
    let bpw = 8.0 * p.total_bytes().unwrap() as f64 / (c.rows * c.cols) as f64;
    let mut config = format!(
        "d{} n{} {} R{}xC{} r{}",
        c.d,
        c.n,
        c.cb.name(),
        c.tile.0,
        c.tile.1,
        c.rank
    );
    if c.rotation > 0 {
        config.push_str(&format!(" rot{}", c.rotation));
    }
    if c.row_scales {
        config.push_str(" rs");
    }
    println!(
        "| {:<36} | {:>5} | {:>5} | {:>5.2} | {:>8.3} | {:>10.2} | {:>5} |",
        config, c.rows, c.cols, bpw, ms, gbs, iters
    );
}

fn main() {
    use CodebookType::{F16, I8};
    let cfg = |rows, cols, d, n, tile, rank, cb| Config {
        rows,
        cols,
        d,
        n,
        tile,
        rank,
        cb,
        rotation: 0,
        row_scales: false,
    };
    let rotated = |c: Config, rotation| Config { rotation, ..c };
    let scaled = |c: Config| Config {
        row_scales: true,
        ..c
    };
    let configs = [
        cfg(1536, 576, 2, 256, (64, 576), 0, I8),
        cfg(1536, 576, 2, 256, (64, 576), 0, F16),
        cfg(1536, 576, 2, 4096, (64, 576), 0, I8),
        cfg(1536, 576, 2, 4096, (64, 576), 0, F16),
        cfg(1536, 576, 2, 256, (64, 576), 8, I8),
        cfg(1536, 576, 2, 4096, (64, 576), 8, F16),
        cfg(576, 1536, 2, 256, (576, 64), 0, I8),
        cfg(576, 1536, 2, 4096, (576, 512), 0, I8),
        cfg(576, 1536, 2, 4096, (576, 512), 8, I8),
        cfg(576, 1536, 2, 256, (576, 2), 0, I8), // paper layout C = d
        cfg(576, 1536, 4, 4096, (576, 1536), 0, I8),
        cfg(576, 1536, 1, 16, (64, 1536), 0, I8),
        // The --bits 3 plan's layouts with the default column rotation.
        cfg(1536, 576, 3, 512, (344, 576), 0, I8),
        rotated(cfg(1536, 576, 3, 512, (344, 576), 0, I8), 64),
        cfg(576, 1536, 4, 1024, (343, 1536), 0, I8),
        rotated(cfg(576, 1536, 4, 1024, (343, 1536), 0, I8), 256),
        // The same with row scales (the default since encoding version 3).
        scaled(rotated(cfg(1536, 576, 3, 512, (344, 576), 0, I8), 64)),
        scaled(rotated(cfg(576, 1536, 4, 1024, (343, 1536), 0, I8), 256)),
    ];
    println!("single thread, best of >= 5 decodes (>= 0.4 s) of the whole tensor via Encoded::decode_into");
    println!(
        "| {:<36} | {:>5} | {:>5} | {:>5} | {:>8} | {:>10} | {:>5} |",
        "config", "rows", "cols", "bpw", "ms", "GB/s f32", "iters"
    );
    println!(
        "|{:-<38}|{:-<7}|{:-<7}|{:-<7}|{:-<10}|{:-<12}|{:-<7}|",
        "", "", "", "", "", "", ""
    );
    let mut rng = Rng(SplitMix64::new(42));
    for c in &configs {
        bench(c, &mut rng);
    }
}
