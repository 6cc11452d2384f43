//! One-token product (`Matrix::matvec`) of Athena weights, single-threaded, through the
//! codebook kernel of this machine (`ATHENA_KERNELS=scalar` for the scalar reference).
//!
//! `cargo run --release -p athena-runtime --example bench_kernels`
//!
//! Random weights shaped like SmolLM2's at 3 bits per weight (576 x 576, 1536 x 576,
//! 576 x 1536; d = 3 with n = 512 and d = 4 with n = 1024; i8 codebooks; tiles of a few hundred
//! rows spanning all columns; rotation 64; row scales). The table shows the median of 3 rounds
//! (GB/s of index data read, millions of weights per second, microseconds per product). To
//! compare two kernels, time both in one run, alternating, and compare their ratios round by
//! round: on a shared machine the absolute numbers drift by tens of percent between runs.

use std::time::{Duration, Instant};

use athena_decode::{CodebookType, Encoded, Params, Parts};
use athena_runtime::kernels;
use athena_runtime::matrix::{AthenaMatrix, Matrix};

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f32 {
        (self.u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u64() as u8).collect()
    }

    fn f16s(&mut self, n: usize, lo: f32, hi: f32) -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                let v = lo + (hi - lo) * (self.unit() + 1.0) / 2.0;
                half::f16::from_f32(v).to_le_bytes()
            })
            .collect()
    }
}

struct Buffers {
    params: Params,
    indices: Vec<u8>,
    codebook: Vec<u8>,
    scales: Vec<u8>,
    signs: Vec<u8>,
    row_scales: Vec<u8>,
}

fn buffers(rows: usize, cols: usize, d: usize, bits: u32, tile_rows: usize) -> Buffers {
    let params = Params {
        rows: rows as u64,
        cols: cols as u64,
        vector_dim: d as u32,
        centroids: 1 << bits,
        tile_rows: tile_rows as u64,
        tile_cols: cols as u64,
        rank: 0,
        codebook: CodebookType::I8,
        rotation: 64,
        row_scales: true,
    };
    params.validate().expect("valid parameters");
    let mut rng = Rng(rows as u64 * 31 + cols as u64 * 7 + d as u64);
    let stride = params.row_stride_bytes().unwrap() as usize;
    let used = params.groups() as usize * bits as usize;
    let mut indices = rng.bytes(params.indices_len().unwrap());
    if !used.is_multiple_of(8) {
        for row in indices.chunks_exact_mut(stride) {
            row[stride - 1] &= (1u8 << (used % 8)) - 1;
        }
    }
    let mut scales = Vec::new();
    for _ in 0..params.scales_len().unwrap() / 4 {
        scales.extend(rng.f16s(1, -0.06, -0.04)); // offset
        scales.extend(rng.f16s(1, 3e-4, 5e-4)); // step
    }
    Buffers {
        params,
        indices,
        codebook: rng.bytes(params.codebook_len().unwrap()),
        scales,
        signs: rng.bytes(params.signs_len().unwrap()),
        row_scales: rng.f16s(rows, 0.5, 2.0),
    }
}

/// Seconds per product of `iters` products.
fn time(m: &Matrix, x: &[f32], y: &mut [f32], iters: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        m.matvec(x, y);
    }
    t.elapsed().as_secs_f64() / iters as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    println!("kernels: {:?}, 1 thread", kernels::isa());
    println!(
        "{:>11} {:>2} {:>5} {:>4} | {:>7} {:>8} {:>7}",
        "rows x cols", "d", "n", "R", "GB/s", "Mw/s", "us"
    );
    let shapes = [(576, 576, 288), (1536, 576, 512), (576, 1536, 288)];
    for (d, bits) in [(3usize, 9u32), (4, 10)] {
        for &(rows, cols, tile_rows) in &shapes {
            let b = buffers(rows, cols, d, bits, tile_rows);
            let parts = Parts {
                indices: &b.indices,
                codebook: &b.codebook,
                scales: &b.scales,
                signs: &b.signs,
                row_scales: &b.row_scales,
                ..Parts::default()
            };
            let encoded = Encoded::new(b.params, parts).expect("valid sizes");
            let m = Matrix::Athena(AthenaMatrix::new(&encoded));
            let mut rng = Rng(5);
            let x: Vec<f32> = (0..cols).map(|_| rng.unit()).collect();
            let mut y = vec![0.0f32; rows];
            // About 100 ms per round.
            let probe = pool.install(|| time(&m, &x, &mut y, 20));
            let iters = ((0.1 / probe) as usize).max(1);
            let t = median(
                (0..3)
                    .map(|_| pool.install(|| time(&m, &x, &mut y, iters)))
                    .collect(),
            );
            let index_bytes = (rows * b.params.row_stride_bytes().unwrap() as usize) as f64;
            println!(
                "{:>11} {:>2} {:>5} {:>4} | {:>7.2} {:>8.0} {:>7.1}",
                format!("{rows}x{cols}"),
                d,
                1 << bits,
                tile_rows,
                index_bytes / t / 1e9,
                (rows * cols) as f64 / t / 1e6,
                t * 1e6
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
