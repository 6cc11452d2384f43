//! The GPU code path of the quantizer (`gptvq_tensors`, `Engine::Tensors`) run on candle's CPU
//! device against the CPU loop (`gptvq`, `Engine::Simd`): on synthetic layers of every planned
//! (d, n) and, with ATHENA_REAL_MODEL_DIR set, on block 0 of SmolLM2-135M. Both are one
//! algorithm; the device sums in f32 in another order, so an index may differ where two
//! centroids score within rounding of each other, and the difference then travels through the
//! error feedback. Each case prints what differs (see `check`).

use std::path::PathBuf;

use athena::quantizer::hessian::HessianAccumulator;
use athena::quantizer::plan::{menu_config, LEVELS};
use athena::quantizer::rng::SplitMix64;
use athena::quantizer::{
    quantize_linear_banded, quantize_linear_kronecker, CodebookKind, Engine, VqConfig,
};
use candle_core::Device;
use faer::Mat;

fn gaussian(rng: &mut SplitMix64) -> f32 {
    let (u1, u2) = (rng.unit().max(1e-12), rng.unit());
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// A `rows x cols` layer with heavy-tailed weights and the Hessian of correlated, unevenly
/// scaled inputs (like real activations).
fn layer(rows: usize, cols: usize, seed: u64) -> (Vec<f32>, Mat<f64>) {
    let mut rng = SplitMix64::new(seed);
    let w = (0..rows * cols)
        .map(|_| gaussian(&mut rng) * 0.05 * (1.0 + gaussian(&mut rng).abs()))
        .collect();
    let tokens = 4 * cols;
    let mut x = vec![0f32; tokens * cols];
    for t in 0..tokens {
        let shared = gaussian(&mut rng);
        for j in 0..cols {
            let scale = 1.0 + (j % 7) as f32 + if j % 61 == 0 { 20.0 } else { 0.0 };
            x[t * cols + j] = scale * (0.7 * shared + 0.7 * gaussian(&mut rng));
        }
    }
    let mut acc = HessianAccumulator::new(cols);
    acc.add(&x, tokens);
    (w, acc.finish())
}

fn on_tensors(cfg: &VqConfig) -> VqConfig {
    VqConfig {
        engine: Engine::Tensors(Device::Cpu),
        ..cfg.clone()
    }
}

/// Runs both engines on one layer, prints the comparison and checks it: the layer losses agree
/// within 1%, and where a tile's codebook came out the same, its indices agree but for
/// near-ties (at most 1 in 1000). A tile whose k-means took another turn (a near-tie in one of
/// its Lloyd assignments) has other centroids, so its indices are not compared; those tiles
/// are counted.
fn check(label: &str, w: &[f32], rows: usize, cols: usize, hs: &[Mat<f64>], cfg: &VqConfig) {
    let cpu = quantize_linear_banded(w, rows, cols, hs, cfg, 7).unwrap();
    let dev = quantize_linear_banded(w, rows, cols, hs, &on_tensors(cfg), 7).unwrap();
    let cfg = &cpu.config; // the rotation choice of the CPU loop
    assert_eq!(
        dev.config.rotation, cfg.rotation,
        "{label}: rotation choice"
    );
    let (cpu_vq, dev_vq) = (&cpu.vq, &dev.vq);
    let same_codebook: Vec<bool> = cpu_vq
        .codebooks
        .iter()
        .zip(&dev_vq.codebooks)
        .map(|(a, b)| a == b)
        .collect();
    let groups = cols.div_ceil(cfg.d);
    let (mut compared, mut near_ties) = (0, 0);
    for i in 0..rows {
        for g in 0..groups {
            if same_codebook[cfg.tile_of(cols, i, g)] {
                compared += 1;
                near_ties +=
                    usize::from(cpu_vq.indices[i * groups + g] != dev_vq.indices[i * groups + g]);
            }
        }
    }
    let other = same_codebook.iter().filter(|&&s| !s).count();
    let ratio = dev.relative_loss / cpu.relative_loss;
    println!(
        "{label}: {other} of {} codebooks differ; {near_ties} of {compared} indices under equal \
         codebooks differ; loss {:.6} (cpu) vs {:.6} (tensors), ratio {ratio:.5}",
        same_codebook.len(),
        cpu.relative_loss,
        dev.relative_loss
    );
    assert!(
        (ratio - 1.0).abs() <= 0.01,
        "{label}: layer loss {:.6} on the tensor path vs {:.6} on the CPU loop",
        dev.relative_loss,
        cpu.relative_loss
    );
    assert!(
        near_ties * 1000 <= compared,
        "{label}: {near_ties} of {compared} indices differ under equal codebooks"
    );
    assert!(dev.dequantized.iter().all(|x| x.is_finite()));
}

#[test]
fn every_planned_level_matches_the_cpu_loop() {
    let (rows, cols) = (96, 192);
    let (w, h) = layer(rows, cols, 11);
    for &(d, n) in LEVELS.iter() {
        let cfg = VqConfig {
            row_scales: true,
            ..menu_config(d, n, rows, cols, CodebookKind::Int8, 0)
        };
        check(
            &format!("d={d} n={n}"),
            &w,
            rows,
            cols,
            std::slice::from_ref(&h),
            &cfg,
        );
    }
}

#[test]
fn narrow_tiles_partial_groups_rotation_and_bands_match_the_cpu_loop() {
    // Several tile rows and tile columns, so codebooks are fitted mid-loop.
    let (w, h) = layer(64, 192, 12);
    let tiles = VqConfig::new(3, 64, 16, 48);
    check(
        "tiles 16 x 48",
        &w,
        64,
        192,
        std::slice::from_ref(&h),
        &tiles,
    );
    // A partial last group (190 = 47 * 4 + 2), and a tile row that is partial too.
    let (w, h) = layer(60, 190, 13);
    check(
        "partial group",
        &w,
        60,
        190,
        &[h],
        &VqConfig::new(4, 256, 16, 190),
    );
    // The column rotation and the rotate-if-better choice around the loop.
    let (w, h) = layer(64, 192, 14);
    let rotated = VqConfig {
        rotation: 64,
        rotation_if_better: true,
        row_scales: true,
        ..VqConfig::new(2, 64, 64, 192)
    };
    check("rotation", &w, 64, 192, &[h], &rotated);
    // Two row bands, each under its own Hessian (BoA's value heads).
    let (w, h0) = layer(64, 128, 15);
    let (_, h1) = layer(64, 128, 16);
    check(
        "bands",
        &w,
        64,
        128,
        &[h0, h1],
        &VqConfig::new(2, 32, 32, 128),
    );
    // No error feedback, no metric: the plain k-means path of the loop.
    let (w, h) = layer(48, 96, 17);
    let plain = VqConfig {
        error_feedback: false,
        use_hessian_metric: false,
        ..VqConfig::new(2, 16, 48, 96)
    };
    check("no feedback", &w, 48, 96, &[h], &plain);
}

#[test]
fn row_hessian_layers_stay_on_the_cpu_loop() {
    let (w, h) = layer(32, 64, 18);
    let (_, row_h) = layer(32, 32, 19);
    let cfg = VqConfig::new(2, 16, 16, 64);
    let cpu = quantize_linear_kronecker(&w, 32, 64, &h, &row_h, &cfg, 3).unwrap();
    let dev = quantize_linear_kronecker(&w, 32, 64, &h, &row_h, &on_tensors(&cfg), 3).unwrap();
    assert_eq!(cpu.vq.indices, dev.vq.indices);
    assert_eq!(cpu.dequantized, dev.dequantized);
}

/// Block 0 of SmolLM2-135M under its calibration Hessians (wiki.utf8, 8 sequences of 512), each
/// layer at the 3-bit plan's most used level (d = 3, 512 centroids, row scales).
#[test]
fn block_zero_of_smollm2_matches_the_cpu_loop() {
    use athena::calibration::{calibration_sequences, Accumulate, HessianObserver};
    use athena::checkpoint::{HfFolder, Tokenizer};
    use athena::model::{LinearKind, Model};

    let Some(dir) = std::env::var_os("ATHENA_REAL_MODEL_DIR").map(PathBuf::from) else {
        println!("SKIP block_zero_of_smollm2: set ATHENA_REAL_MODEL_DIR to the materialised SmolLM2 folder");
        return;
    };
    let cache = std::env::var_os("ATHENA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/athena")))
        .unwrap();
    let folder = HfFolder::open_validated(&dir).unwrap();
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let model = Model::new(&folder, Device::Cpu).unwrap();
    let text = cache.join("text/wiki.utf8");
    let sequences =
        calibration_sequences(&text, &tokenizer, 8 * 512, 512, "--calib-tokens").unwrap();
    let hidden = model.embed(&sequences).unwrap();
    let block = model.load_block(0).unwrap();
    let mut observer = HessianObserver::new(Accumulate::Hessian);
    model
        .run_block(&block, &hidden, Some(&mut observer))
        .unwrap();
    for kind in LinearKind::ALL {
        let module = kind.hf_name(0);
        let weight = &block.linear(kind).weight;
        let (rows, cols) = weight.dims2().unwrap();
        let w: Vec<f32> = weight.flatten_all().unwrap().to_vec1().unwrap();
        let h = observer.hessian(&module).unwrap().finish();
        let cfg = VqConfig {
            row_scales: true,
            ..menu_config(3, 512, rows, cols, CodebookKind::Int8, 0)
        };
        check(&module, &w, rows, cols, &[h], &cfg);
    }
}
