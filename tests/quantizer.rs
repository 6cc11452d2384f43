//! Properties of the vector quantizer on a synthetic layer with correlated inputs.

use athena::quantizer::hessian::HessianAccumulator;
use athena::quantizer::rng::SplitMix64;
use athena::quantizer::{quantize_linear, CodebookKind, GroupOrder, VqConfig};
use faer::Mat;

const ROWS: usize = 48;
const COLS: usize = 64;

fn gaussian(rng: &mut SplitMix64) -> f32 {
    let (u1, u2) = (rng.unit().max(1e-12), rng.unit());
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// A layer whose inputs are strongly correlated and unevenly scaled, like real activations.
fn layer() -> (Vec<f32>, Mat<f64>) {
    let mut rng = SplitMix64::new(42);
    let w: Vec<f32> = (0..ROWS * COLS)
        .map(|_| gaussian(&mut rng) * 0.05)
        .collect();
    let tokens = 512;
    let mut x = vec![0f32; tokens * COLS];
    for t in 0..tokens {
        let shared = gaussian(&mut rng);
        for j in 0..COLS {
            let scale = 1.0 + (j % 7) as f32;
            x[t * COLS + j] = scale * (0.8 * shared + 0.6 * gaussian(&mut rng));
        }
    }
    let mut acc = HessianAccumulator::new(COLS);
    acc.add(&x, tokens);
    (w, acc.finish())
}

fn config() -> VqConfig {
    VqConfig::new(2, 16, 16, COLS)
}

#[test]
fn indices_and_codebooks_reproduce_the_dequantized_weights() {
    let (w, h) = layer();
    let q = quantize_linear(&w, ROWS, COLS, &h, &config(), 1).unwrap();
    let groups = COLS / 2;
    for i in 0..ROWS {
        for g in 0..groups {
            let a = q.vq.indices[i * groups + g] as usize;
            assert!(a < 16);
            let cb = &q.vq.codebooks[i / 16].values;
            for e in 0..2 {
                assert_eq!(
                    q.dequantized[i * COLS + g * 2 + e].to_bits(),
                    cb[a * 2 + e].to_bits()
                );
            }
        }
    }
}

#[test]
fn hessian_metric_and_error_feedback_lower_the_layer_loss() {
    let (w, h) = layer();
    let athena = quantize_linear(&w, ROWS, COLS, &h, &config(), 1)
        .unwrap()
        .relative_loss;
    let mut plain = config();
    plain.use_hessian_metric = false;
    plain.error_feedback = false;
    let plain = quantize_linear(&w, ROWS, COLS, &h, &plain, 1)
        .unwrap()
        .relative_loss;
    let mut no_feedback = config();
    no_feedback.error_feedback = false;
    let no_feedback = quantize_linear(&w, ROWS, COLS, &h, &no_feedback, 1)
        .unwrap()
        .relative_loss;
    eprintln!("athena {athena} no-feedback {no_feedback} plain {plain}");
    assert!(
        athena < 0.8 * plain,
        "athena {athena} vs plain k-means {plain}"
    );
    assert!(
        athena < no_feedback,
        "athena {athena} vs without feedback {no_feedback}"
    );
}

#[test]
fn low_rank_residual_lowers_the_loss_and_is_in_the_reconstruction() {
    let (w, h) = layer();
    let base = quantize_linear(&w, ROWS, COLS, &h, &config(), 1).unwrap();
    let mut cfg = config();
    cfg.rank = 4;
    let lr = quantize_linear(&w, ROWS, COLS, &h, &cfg, 1).unwrap();
    assert!(
        lr.relative_loss < base.relative_loss,
        "{} vs {}",
        lr.relative_loss,
        base.relative_loss
    );
    assert_eq!(lr.lowrank.as_ref().unwrap().a.len(), ROWS * 4);
}

#[test]
fn same_seed_same_result_for_every_layout() {
    let (w, h) = layer();
    for (tile_rows, tile_cols, order, kind) in [
        (16, COLS, GroupOrder::HessianDiagonal, CodebookKind::Int8),
        (ROWS, 2, GroupOrder::Natural, CodebookKind::F16),
        (5, 6, GroupOrder::HessianDiagonal, CodebookKind::Int8),
    ] {
        let cfg = VqConfig {
            tile_rows,
            tile_cols,
            order,
            codebook: kind,
            ..config()
        };
        let a = quantize_linear(&w, ROWS, COLS, &h, &cfg, 9).unwrap();
        let b = quantize_linear(&w, ROWS, COLS, &h, &cfg, 9).unwrap();
        assert_eq!(a.vq.indices, b.vq.indices);
        assert_eq!(a.dequantized, b.dequantized);
        assert!(
            a.relative_loss.is_finite() && a.relative_loss < 1.0,
            "{cfg:?}: {}",
            a.relative_loss
        );
    }
}

#[test]
fn bad_settings_are_rejected_with_a_reason() {
    let (w, h) = layer();
    for (cfg, needle) in [
        (VqConfig::new(3, 16, 16, 63), "not a multiple of d"),
        (VqConfig::new(2, 12, 16, COLS), "power of two"),
        (VqConfig::new(2, 16, ROWS + 1, COLS), "tile rows"),
        (VqConfig::new(2, 16, 16, COLS + 2), "tile columns"),
        (VqConfig::new(9, 16, 16, 63), "outside 1..=8"),
    ] {
        let err = quantize_linear(&w, ROWS, COLS, &h, &cfg, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{err}");
    }
}
