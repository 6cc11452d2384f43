//! Properties of the vector quantizer on a synthetic layer with correlated inputs.

use athena::quantizer::hessian::HessianAccumulator;
use athena::quantizer::rng::SplitMix64;
use athena::quantizer::{
    quantize_linear, quantize_linear_banded, quantize_linear_kronecker, relative_loss_banded,
    CodebookKind, GroupOrder, QuantizedLinear, VqConfig,
};
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
    (w, hessian(&mut rng, |j| 1.0 + (j % 7) as f32))
}

/// H of correlated inputs whose column j is scaled by `scale(j)`.
fn hessian(rng: &mut SplitMix64, scale: impl Fn(usize) -> f32) -> Mat<f64> {
    let tokens = 512;
    let mut x = vec![0f32; tokens * COLS];
    for t in 0..tokens {
        let shared = gaussian(rng);
        for j in 0..COLS {
            x[t * COLS + j] = scale(j) * (0.8 * shared + 0.6 * gaussian(rng));
        }
    }
    let mut acc = HessianAccumulator::new(COLS);
    acc.add(&x, tokens);
    acc.finish()
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
        (VqConfig::new(3, 16, 16, 62), "or a multiple of d = 3"),
        (VqConfig::new(3, 16, 16, 2), "tile columns 2"),
        (VqConfig::new(2, 12, 16, COLS), "power of two"),
        (VqConfig::new(2, 16, ROWS + 1, COLS), "tile rows"),
        (VqConfig::new(2, 16, 16, COLS + 2), "tile columns"),
        (VqConfig::new(9, 16, 16, 63), "outside 1..=8"),
        (
            VqConfig {
                rotation: 32,
                ..VqConfig::new(2, 16, 16, COLS)
            },
            "power of four",
        ),
        (
            VqConfig {
                rotation: 256,
                ..VqConfig::new(2, 16, 16, COLS)
            },
            "dividing 64 columns",
        ),
    ] {
        let err = quantize_linear(&w, ROWS, COLS, &h, &cfg, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn scalar_baselines_gptq_beats_round_to_nearest() {
    let (w, h) = layer();
    let rtn = VqConfig {
        uniform_grid: true,
        error_feedback: false,
        use_hessian_metric: false,
        ..VqConfig::new(1, 8, 1, 32)
    };
    let gptq = VqConfig {
        uniform_grid: true,
        ..VqConfig::new(1, 8, 1, 32)
    };
    let rtn = quantize_linear(&w, ROWS, COLS, &h, &rtn, 1).unwrap();
    let gptq = quantize_linear(&w, ROWS, COLS, &h, &gptq, 1).unwrap();
    // A uniform grid holds 8 evenly spaced levels per tile.
    let levels = &rtn.vq.codebooks[0].values;
    let step = levels[1] - levels[0];
    assert!(
        levels
            .windows(2)
            .all(|p| ((p[1] - p[0]) - step).abs() < step * 0.02 + 1e-3),
        "{levels:?}"
    );
    assert!(
        gptq.relative_loss < rtn.relative_loss,
        "gptq {} rtn {}",
        gptq.relative_loss,
        rtn.relative_loss
    );
}

#[test]
fn row_bands_use_their_own_hessians() {
    let (w, h1) = layer();
    // The second band's inputs weigh other columns: BoA's per-kv-head Hessians of v_proj differ
    // like this.
    let h2 = hessian(&mut SplitMix64::new(7), |j| {
        1.0 + ((COLS - j) % 5) as f32 * 2.0
    });
    let bands = [h1.clone(), h2];
    let cfg = VqConfig::new(2, 16, 8, COLS);
    let banded = quantize_linear_banded(&w, ROWS, COLS, &bands, &cfg, 1).unwrap();
    let shared = quantize_linear(&w, ROWS, COLS, &h1, &cfg, 1).unwrap();
    let banded_loss = relative_loss_banded(&w, &banded.dequantized, ROWS, COLS, &bands);
    let shared_loss = relative_loss_banded(&w, &shared.dequantized, ROWS, COLS, &bands);
    assert!(
        (banded.relative_loss - banded_loss).abs() < 1e-9 * banded_loss,
        "{} vs {banded_loss}",
        banded.relative_loss
    );
    assert!(
        banded_loss < shared_loss,
        "per-band {banded_loss} vs one Hessian {shared_loss}"
    );
    // Codebooks of the bands concatenate in tile order: tile i / 8 serves row i.
    let groups = COLS / 2;
    assert_eq!(banded.vq.codebooks.len(), ROWS / 8);
    for i in 0..ROWS {
        for g in 0..groups {
            let a = banded.vq.indices[i * groups + g] as usize;
            let cb = &banded.vq.codebooks[i / 8].values;
            assert_eq!(banded.dequantized[i * COLS + 2 * g], cb[2 * a]);
        }
    }
    // A tile spanning both bands falls back to one mean Hessian, still one codebook per tile.
    let spanning = VqConfig::new(2, 16, ROWS, COLS);
    let q = quantize_linear_banded(&w, ROWS, COLS, &bands, &spanning, 1).unwrap();
    assert_eq!(q.vq.codebooks.len(), 1);
}

/// tr(dW H dW^T H_row) of the reconstruction `what` of `w`.
fn kronecker_loss(w: &[f32], what: &[f32], h: &Mat<f64>, row_h: &Mat<f64>) -> f64 {
    let dw = Mat::<f64>::from_fn(ROWS, COLS, |i, j| {
        (w[i * COLS + j] - what[i * COLS + j]) as f64
    });
    let m = &dw * h * dw.transpose();
    (0..ROWS)
        .flat_map(|i| (0..ROWS).map(move |k| (i, k)))
        .map(|(i, k)| row_h[(i, k)] * m[(i, k)])
        .sum()
}

#[test]
fn row_hessians_lower_the_kronecker_loss_and_the_identity_changes_nothing() {
    let (w, h) = layer();
    // Three heads of 16 rows, each with its own strongly correlated, unevenly scaled row
    // Hessian (the keys a head's queries meet), none across heads.
    let mut rng = SplitMix64::new(11);
    let head = 16;
    let mut row_h = Mat::<f64>::zeros(ROWS, ROWS);
    for b in 0..ROWS / head {
        let tokens = 256;
        let mut x = vec![0f32; tokens * head];
        for t in 0..tokens {
            let shared = gaussian(&mut rng);
            for j in 0..head {
                x[t * head + j] =
                    (1.0 + (j % 5) as f32) * (0.9 * shared + 0.4 * gaussian(&mut rng));
            }
        }
        let mut acc = HessianAccumulator::new(head);
        acc.add(&x, tokens);
        let hb = acc.finish();
        for i in 0..head {
            for k in 0..head {
                row_h[(b * head + i, b * head + k)] = hb[(i, k)];
            }
        }
    }
    for row_scales in [false, true] {
        let cfg = VqConfig {
            row_scales,
            ..VqConfig::new(2, 16, 16, COLS)
        };
        let plain = quantize_linear(&w, ROWS, COLS, &h, &cfg, 1).unwrap();
        let kron = quantize_linear_kronecker(&w, ROWS, COLS, &h, &row_h, &cfg, 1).unwrap();
        let (lp, lk) = (
            kronecker_loss(&w, &plain.dequantized, &h, &row_h),
            kronecker_loss(&w, &kron.dequantized, &h, &row_h),
        );
        assert!(lk < 0.8 * lp, "row scales {row_scales}: {lk} vs plain {lp}");
        let identity = Mat::<f64>::identity(ROWS, ROWS);
        let same = quantize_linear_kronecker(&w, ROWS, COLS, &h, &identity, &cfg, 1).unwrap();
        assert_eq!(same.dequantized, plain.dequantized);
    }
    let wrong = Mat::<f64>::identity(ROWS - 1, ROWS - 1);
    let cfg = config();
    assert!(quantize_linear_kronecker(&w, ROWS, COLS, &h, &wrong, &cfg, 1).is_err());
}

/// Quantizes `w` with `plain` and with `better`, asserts that `better` reports at most 0.85x
/// the layer loss, and that its reported loss is the loss of its final reconstruction (rotation
/// undone, row scales applied). Returns the `better` quantization.
fn assert_clearly_lower_loss(
    w: &[f32],
    h: &Mat<f64>,
    plain: &VqConfig,
    better: &VqConfig,
    what: &str,
) -> QuantizedLinear {
    let plain = quantize_linear(w, ROWS, COLS, h, plain, 1).unwrap();
    let better = quantize_linear(w, ROWS, COLS, h, better, 1).unwrap();
    eprintln!(
        "plain {} {what} {}",
        plain.relative_loss, better.relative_loss
    );
    assert!(
        better.relative_loss < 0.85 * plain.relative_loss,
        "{what} {} vs plain {}",
        better.relative_loss,
        plain.relative_loss
    );
    let direct = relative_loss_banded(w, &better.dequantized, ROWS, COLS, std::slice::from_ref(h));
    assert!((direct - better.relative_loss).abs() < 1e-4 * direct);
    better
}

#[test]
fn row_scales_lower_the_loss_of_rows_with_different_norms() {
    // Rows of the same distribution at norms 1x to 8x (real layers spread their row norms
    // similarly): without scales the shared codebook spends centroids on magnitude; with them
    // every row is quantized at its own scale. The scales cost 16 bits per row.
    let mut rng = SplitMix64::new(11);
    let w: Vec<f32> = (0..ROWS * COLS)
        .map(|k| gaussian(&mut rng) * 0.05 * (1 + k / COLS % 8) as f32)
        .collect();
    let h = hessian(&mut rng, |j| 1.0 + (j % 7) as f32);
    let cfg = VqConfig::new(2, 16, ROWS, COLS);
    let scaled_cfg = VqConfig {
        row_scales: true,
        ..cfg.clone()
    };
    let scaled = assert_clearly_lower_loss(&w, &h, &cfg, &scaled_cfg, "scaled");
    assert_eq!(scaled.vq.row_scales.len(), ROWS);
}

#[test]
fn column_rotation_lowers_the_loss_of_a_layer_with_massive_activations() {
    // Two input channels with 30x larger activations (LLMs have such channels): their columns
    // dominate the loss, and the rotation spreads them over the block, where the error
    // feedback and the shared codebook handle them better (on SmolLM2 at --bits 3, layer 0's
    // v_proj loss fell 35x).
    let mut rng = SplitMix64::new(9);
    let w: Vec<f32> = (0..ROWS * COLS)
        .map(|_| gaussian(&mut rng) * 0.05)
        .collect();
    let h = hessian(&mut rng, |j| if j % 32 == 5 { 30.0 } else { 1.0 });
    let rotated_cfg = VqConfig {
        rotation: 64,
        ..config()
    };
    assert_clearly_lower_loss(&w, &h, &config(), &rotated_cfg, "rotated");
}

#[test]
fn rotation_if_better_keeps_the_quantization_with_the_lower_layer_loss() {
    let mut rng = SplitMix64::new(9);
    let gaussian_w: Vec<f32> = (0..ROWS * COLS)
        .map(|_| gaussian(&mut rng) * 0.05)
        .collect();
    let massive = hessian(&mut rng, |j| if j % 32 == 5 { 30.0 } else { 1.0 });
    // Weights with a few large outliers (1 in 50 is 12x larger) under evenly scaled inputs:
    // k-means gives the outliers their own centroids, which the rotation smears away.
    let outlier_w: Vec<f32> = (0..ROWS * COLS)
        .map(|_| {
            let big = rng.unit() < 0.02;
            gaussian(&mut rng) * if big { 0.6 } else { 0.05 }
        })
        .collect();
    let even = hessian(&mut rng, |_| 1.0);
    let rotated_cfg = VqConfig {
        rotation: 64,
        ..config()
    };
    let choosing = VqConfig {
        rotation_if_better: true,
        ..rotated_cfg.clone()
    };
    for (case, w, h, expect_rotated) in [
        ("massive activations", &gaussian_w, &massive, true),
        ("outlier weights", &outlier_w, &even, false),
    ] {
        let plain = quantize_linear(w, ROWS, COLS, h, &config(), 1).unwrap();
        let rotated = quantize_linear(w, ROWS, COLS, h, &rotated_cfg, 1).unwrap();
        let chosen = quantize_linear(w, ROWS, COLS, h, &choosing, 1).unwrap();
        eprintln!(
            "{case}: plain {} rotated {}",
            plain.relative_loss, rotated.relative_loss
        );
        assert_eq!(
            rotated.relative_loss < plain.relative_loss,
            expect_rotated,
            "{case}: the synthetic layer no longer shows the effect"
        );
        assert_eq!(chosen.rotation.is_some(), expect_rotated, "{case}");
        assert_eq!(chosen.config.rotation, if expect_rotated { 64 } else { 0 });
        let best = if expect_rotated { &rotated } else { &plain };
        assert_eq!(chosen.relative_loss, best.relative_loss, "{case}");
        assert_eq!(chosen.dequantized, best.dequantized, "{case}");
    }
}

/// When d does not divide the columns, each row's last group is partial: it is assigned by its
/// real columns alone (the padding the quantizer adds has no weight). Checked with the plain
/// Euclidean metric and no error feedback, where the right choice is the centroid whose first
/// coordinate is nearest to the row's last weight.
#[test]
fn a_partial_last_group_is_assigned_by_its_real_columns() {
    let (w, h) = layer();
    let cfg = VqConfig {
        use_hessian_metric: false,
        error_feedback: false,
        refine_codebooks: false,
        ..VqConfig::new(3, 16, ROWS, COLS)
    };
    let q = quantize_linear(&w, ROWS, COLS, &h, &cfg, 3).unwrap();
    let groups = COLS.div_ceil(3);
    assert_eq!((groups, q.vq.indices.len()), (22, ROWS * 22));
    let cb = &q.vq.codebooks[0].values;
    for i in 0..ROWS {
        let x = w[i * COLS + COLS - 1];
        let chosen = q.vq.indices[i * groups + groups - 1] as usize;
        let best = (0..16)
            .map(|a| (x - cb[a * 3]).abs())
            .fold(f32::INFINITY, f32::min);
        assert!(
            (x - cb[chosen * 3]).abs() <= best + 1e-6,
            "row {i}: {x} got centroid {chosen} ({}), nearest first coordinate is {best} away",
            cb[chosen * 3]
        );
        assert_eq!(q.dequantized[i * COLS + COLS - 1], cb[chosen * 3]);
    }
    // With the Hessian metric and error feedback the layer loss stays that of a working
    // quantizer.
    let full = quantize_linear(&w, ROWS, COLS, &h, &VqConfig::new(3, 16, 16, COLS), 3).unwrap();
    assert!(full.relative_loss < 0.5, "{}", full.relative_loss);
}
