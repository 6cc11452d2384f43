//! APTQ-style mixed precision (ATHENA-MATH 5): every layer gets one configuration from a menu so
//! that the average bits per weight of all quantized weights lands at or just below the budget,
//! spending bits where the Hessian says the layer is sensitive.
//!
//! Predicted loss of a layer under a configuration: sensitivity * 2^(-2 * index bits per weight)
//! (the rate-distortion slope of a quantizer with that many bits), with sensitivity =
//! tr(H) * ||W||_F^2 / M: the expected tr(dW H dW^T) of a relative error spread over the layer.
//! The knapsack is solved greedily by marginal loss reduction per added bit.

use super::{CodebookKind, VqConfig};

/// What the planner needs to know about one layer.
#[derive(Debug, Clone)]
pub struct LayerInfo {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub sensitivity: f64,
}

/// The plan for one layer.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    pub name: String,
    pub config: VqConfig,
    /// Exact stored bits per weight of this configuration (every byte counted).
    pub bpw: f64,
}

/// Index-bit levels of the d = 2 menu: (d, n), 1.5 to 4 bits per weight, so a budget of 2 can
/// be met by mixing 1.5 and 2.
pub const MENU_D2: [(usize, usize); 6] = [(2, 8), (2, 16), (2, 32), (2, 64), (2, 128), (2, 256)];

/// The d = 3 menu, 1.33 to 3.33 index bits, topped with the d = 2 levels at 3.5 and 4 bits
/// (d = 3 there would need 2048 or 4096 centroids: k-means cost grows with n). At equal rate
/// three-dimensional codebooks fit the weights better: --vq 3,512,192,576 (3.11 bpw) measured
/// wiki perplexity 18.10 on SmolLM2-135M against 21.23 for --vq 2,64,32,576 (3.06 bpw).
pub const MENU_D3: [(usize, usize); 9] = [
    (3, 16),
    (3, 32),
    (3, 64),
    (3, 128),
    (3, 256),
    (3, 512),
    (3, 1024),
    (2, 128),
    (2, 256),
];

/// The low-rate d = 4 levels (1.5 to 2.25 index bits). At 2 bits d = 4 beats d = 3 by a wide
/// margin: --vq 4,256,192,576 (2.078 bpw) measured 53.98 against 66.33 for --vq 3,64,48,576
/// (2.06 bpw), SmolLM2-135M, 8192 calibration tokens.
const D4_LOW: [(usize, usize); 4] = [(4, 64), (4, 128), (4, 256), (4, 512)];

/// d = 4 below 2.5 bits, then the d = 3 menu from 2.67 bits (columns divisible by 12).
pub const MENU_D4_D3: [(usize, usize); 9] = [
    D4_LOW[0],
    D4_LOW[1],
    D4_LOW[2],
    D4_LOW[3],
    (3, 256),
    (3, 512),
    (3, 1024),
    (2, 128),
    (2, 256),
];

/// d = 4 below 2.5 bits, then d = 2 (columns divisible by 4 but not 3, e.g. Qwen2.5's 896).
pub const MENU_D4_D2: [(usize, usize); 8] = [
    D4_LOW[0],
    D4_LOW[1],
    D4_LOW[2],
    D4_LOW[3],
    (2, 32),
    (2, 64),
    (2, 128),
    (2, 256),
];

/// The menu a layer with `cols` columns gets when vectors of up to `max_dim` are allowed: the
/// largest d that divides the columns at each rate (d = 4 below 2.5 bits, d = 3 up to 3.33,
/// d = 2 above; d = 2 wherever nothing larger divides).
pub fn menu_for(max_dim: usize, cols: usize) -> &'static [(usize, usize)] {
    let four = max_dim >= 4 && cols.is_multiple_of(4);
    let three = max_dim >= 3 && cols.is_multiple_of(3);
    match (four, three) {
        (true, true) => &MENU_D4_D3,
        (true, false) => &MENU_D4_D2,
        (false, true) => &MENU_D3,
        (false, false) => &MENU_D2,
    }
}

/// Largest codebook overhead (bpw) the cheapest level of a d = 3 or d = 4 menu may cost on a
/// layer before the layer falls back to a smaller d.
pub const MAX_LOWEST_OVERHEAD_BPW: f64 = 0.5;

/// Codebook overhead the tiles aim at, in bits per weight.
pub const CODEBOOK_OVERHEAD_BPW: f64 = 0.0625;

/// A configuration of the menu entry (d, n) for a `rows x cols` layer: full-width tiles with as
/// few rows as keep the codebook overhead near [`CODEBOOK_OVERHEAD_BPW`].
pub fn menu_config(
    d: usize,
    n: usize,
    rows: usize,
    cols: usize,
    codebook: CodebookKind,
    rank: usize,
) -> VqConfig {
    let entry_bits = if codebook == CodebookKind::Int8 {
        8
    } else {
        16
    };
    let scale_bits = if codebook == CodebookKind::Int8 {
        32 * d
    } else {
        0
    };
    let codebook_bits = (n * d * entry_bits + scale_bits) as f64;
    let tile_weights = codebook_bits / CODEBOOK_OVERHEAD_BPW;
    let tile_rows = ((tile_weights / cols as f64).ceil() as usize).clamp(1, rows);
    VqConfig {
        rank,
        codebook,
        ..VqConfig::new(d, n, tile_rows, cols)
    }
}

/// Exact bpw of a configuration on a `rows x cols` layer, from the spec's byte sizes.
pub fn config_bpw(cfg: &VqConfig, rows: usize, cols: usize) -> f64 {
    let params = cfg.encoding_params(rows, cols);
    let bytes = params.total_bytes().expect("validated configuration");
    8.0 * bytes as f64 / (rows * cols) as f64
}

/// Errors of planning. Display is one line.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("--bits {budget} is below the smallest configuration the layers allow ({min:.3} bpw at the lowest level of the menu)")]
    BudgetTooSmall { budget: f64, min: f64 },
    #[error("layer '{name}' ({rows} x {cols}): {problem}")]
    Layer {
        name: String,
        rows: usize,
        cols: usize,
        problem: String,
    },
}

/// Chooses one configuration per layer from its [`menu_for`] with [`menu_config`] tiles so that the
/// weighted average bpw is <= `budget`.
pub fn plan(
    layers: &[LayerInfo],
    budget: f64,
    max_dim: usize,
    codebook: CodebookKind,
    rank_of: impl Fn(&LayerInfo) -> usize,
) -> Result<Vec<LayerPlan>, PlanError> {
    plan_with(layers, budget, max_dim, |l, d, n| {
        menu_config(d, n, l.rows, l.cols, codebook, rank_of(l))
    })
}

/// As [`plan`], with `make(layer, d, n)` building the configuration of each menu entry.
pub fn plan_with(
    layers: &[LayerInfo],
    budget: f64,
    max_dim: usize,
    make: impl Fn(&LayerInfo, usize, usize) -> VqConfig,
) -> Result<Vec<LayerPlan>, PlanError> {
    // Candidates per layer, in increasing bits.
    let mut menus = Vec::with_capacity(layers.len());
    for l in layers {
        // Larger-d menus only where their cheapest level's codebooks are affordable on this
        // layer (tiny layers cannot pay for 64 four-dimensional centroids); d = 2 otherwise.
        let affordable = |m: &&[(usize, usize)]| {
            let (d, n) = m[0];
            let cfg = make(l, d, n);
            cfg.validate(l.rows, l.cols).is_ok()
                && config_bpw(&cfg, l.rows, l.cols) - (n as f64).log2() / d as f64
                    <= MAX_LOWEST_OVERHEAD_BPW
        };
        let choices = [menu_for(max_dim, l.cols), menu_for(max_dim.min(3), l.cols)];
        let level_menu = choices.into_iter().find(affordable).unwrap_or(&MENU_D2);
        let mut menu = Vec::new();
        for &(d, n) in level_menu {
            let cfg = make(l, d, n);
            if cfg.validate(l.rows, l.cols).is_ok() {
                let bpw = config_bpw(&cfg, l.rows, l.cols);
                let loss = l.sensitivity * (-2.0 * (n as f64).log2() / d as f64).exp2();
                menu.push((cfg, bpw, loss));
            }
        }
        if menu.is_empty() {
            return Err(PlanError::Layer {
                name: l.name.clone(),
                rows: l.rows,
                cols: l.cols,
                problem: "no configuration of the menu fits this shape".into(),
            });
        }
        menu.sort_by(|a, b| a.1.total_cmp(&b.1));
        menus.push(menu);
    }
    let weights: Vec<f64> = layers.iter().map(|l| (l.rows * l.cols) as f64).collect();
    let total_weights: f64 = weights.iter().sum();
    let mut choice = vec![0usize; layers.len()];
    let bits = |choice: &[usize]| {
        menus
            .iter()
            .zip(choice)
            .zip(&weights)
            .map(|((m, &c), w)| m[c].1 * w)
            .sum::<f64>()
    };
    let min = bits(&choice) / total_weights;
    if min > budget {
        return Err(PlanError::BudgetTooSmall { budget, min });
    }
    let mut used = bits(&choice);
    loop {
        // The upgrade with the best loss reduction per added bit that still fits.
        let mut best: Option<(usize, f64)> = None;
        for (l, menu) in menus.iter().enumerate() {
            if let Some(next) = menu.get(choice[l] + 1) {
                let cur = &menu[choice[l]];
                let added = (next.1 - cur.1) * weights[l];
                if used + added > budget * total_weights {
                    continue;
                }
                let gain = (cur.2 - next.2) / added.max(f64::MIN_POSITIVE);
                if best.is_none_or(|(_, g)| gain > g) {
                    best = Some((l, gain));
                }
            }
        }
        let Some((l, _)) = best else { break };
        used += (menus[l][choice[l] + 1].1 - menus[l][choice[l]].1) * weights[l];
        choice[l] += 1;
    }
    Ok(layers
        .iter()
        .zip(&menus)
        .zip(&choice)
        .map(|((l, menu), &c)| LayerPlan {
            name: l.name.clone(),
            config: menu[c].0.clone(),
            bpw: menu[c].1,
        })
        .collect())
}

/// Weighted average bpw of a plan.
pub fn average_bpw(plans: &[LayerPlan], layers: &[LayerInfo]) -> f64 {
    let (bits, weights) = plans.iter().zip(layers).fold((0.0, 0.0), |(b, w), (p, l)| {
        let n = (l.rows * l.cols) as f64;
        (b + p.bpw * n, w + n)
    });
    bits / weights
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers() -> Vec<LayerInfo> {
        let shapes = [
            ("q", 576, 576, 4.0),
            ("k", 192, 576, 4.0),
            ("up", 1536, 576, 1.0),
            ("down", 576, 1536, 20.0),
        ];
        shapes
            .iter()
            .map(|&(n, r, c, s)| LayerInfo {
                name: n.into(),
                rows: r,
                cols: c,
                sensitivity: s,
            })
            .collect()
    }

    #[test]
    fn average_lands_at_or_below_the_budget_and_close_to_it() {
        let layers = layers();
        for budget in [2.2, 2.5, 3.0, 3.5, 4.0] {
            let p = plan(&layers, budget, 3, CodebookKind::Int8, |_| 0).unwrap();
            let avg = average_bpw(&p, &layers);
            assert!(avg <= budget + 1e-12, "budget {budget}: {avg}");
            assert!(avg > budget - 0.6, "budget {budget}: only {avg} used");
        }
    }

    #[test]
    fn sensitive_layers_get_more_bits() {
        let layers = layers();
        let p = plan(&layers, 3.0, 3, CodebookKind::Int8, |_| 0).unwrap();
        let bits = |name: &str| {
            let c = &p.iter().find(|x| x.name == name).unwrap().config;
            c.index_bits() as f64 / c.d as f64
        };
        assert!(bits("down") >= bits("up"), "{p:?}");
    }

    #[test]
    fn budget_below_every_configuration_is_an_error() {
        let err = plan(&layers(), 1.3, 3, CodebookKind::Int8, |_| 0).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--bits 1.3 is below the smallest configuration"),
            "{err}"
        );
    }

    #[test]
    fn three_dimensional_vectors_where_the_columns_allow() {
        let mut layers = layers();
        layers.push(LayerInfo {
            name: "odd".into(),
            rows: 896,
            cols: 896,
            sensitivity: 1.0,
        });
        let configs = |max_dim| {
            plan(&layers, 2.5, max_dim, CodebookKind::Int8, |_| 0)
                .unwrap()
                .into_iter()
                .map(|p| (p.config.d, p.config.n))
                .collect::<Vec<_>>()
        };
        let with_3 = configs(3);
        // Below 3.5 bits the layers whose columns 3 divides use d = 3; the 896-wide one d = 2.
        for &(d, n) in &with_3[..4] {
            assert!(d == 3 || n >= 128, "{with_3:?}");
        }
        assert!(with_3[..4].iter().any(|&(d, _)| d == 3), "{with_3:?}");
        assert_eq!(with_3[4].0, 2);
        assert!(configs(2).iter().all(|&(d, _)| d == 2));
        // With d = 4 allowed, a low budget is met with d = 4 on every layer (4 divides all).
        let low = plan(&layers, 1.6, 4, CodebookKind::Int8, |_| 0).unwrap();
        assert!(low.iter().all(|p| p.config.d == 4), "{low:?}");
        // A layer too small to pay for d = 4 codebooks gets the d = 2 menu.
        let tiny = [LayerInfo {
            name: "tiny".into(),
            rows: 16,
            cols: 16,
            sensitivity: 1.0,
        }];
        let p = plan(&tiny, 3.0, 4, CodebookKind::Int8, |_| 0).unwrap();
        assert_eq!(p[0].config.d, 2, "{p:?}");
    }

    #[test]
    fn bpw_counts_codebooks_and_scales() {
        let cfg = menu_config(2, 64, 576, 576, CodebookKind::Int8, 0);
        let bpw = config_bpw(&cfg, 576, 576);
        assert!(
            bpw > 3.0 && bpw < 3.0 + 2.0 * CODEBOOK_OVERHEAD_BPW,
            "{bpw} with {cfg:?}"
        );
    }
}
