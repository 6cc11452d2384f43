//! APTQ-style mixed precision (ATHENA-MATH 5): every layer gets one configuration from a menu so
//! that the average bits per weight of all quantized weights lands at or just below the budget,
//! spending bits where the Hessian says the layer is sensitive.
//!
//! Predicted loss of a layer under a configuration: sensitivity * s(d) * 2^(-2 * index bits per
//! weight) (the rate-distortion slope of a quantizer with that many bits; s(d) the measured
//! advantage of larger vectors at the same rate), times 0.92 with per-row scales. The caller
//! chooses the sensitivity (`convert::Sensitivity`): e.g. APTQ's tr(H) * ||W||_F^2 / M, the
//! expected tr(dW H dW^T) of a relative error spread over the layer, or the model loss's Fisher
//! trace in the same role.
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
#[derive(Debug, Clone, PartialEq)]
pub struct LayerPlan {
    pub name: String,
    pub config: VqConfig,
    /// Exact stored bits per weight of this configuration (every byte counted).
    pub bpw: f64,
}

/// The (d, n) levels a layer may get, 1.33 to 8 index bits per weight. d = 2 from 1.5 to 5 bits
/// (so a budget of 2 can be met by mixing 1.5 and 2); d = 3 from 1.33 to 3.33 bits; d = 4 from
/// 1.5 to 3 bits; scalar codebooks (d = 1) from 5 to 8 bits, whose 32-256 centroids cost far
/// less to fit than d = 2 with 1024-65536. d = 3 stops at 1024 centroids (2048 and 4096
/// would serve 3.67 and 4 bits, where d = 2 is nearly as good and k-means is much cheaper).
/// Levels above [`LevelLimits::max_centroids`] are left out: k-means time grows with n, and
/// d = 4 with 2048 or 4096 centroids on the MLP layers at --bits 3 measured 2-5% lower layer
/// loss for 2.7x the conversion time (docs/CHANGELOG.md, 2026-11-27, bda71c1).
pub const LEVELS: [(usize, usize); 26] = [
    (2, 8),
    (2, 16),
    (2, 32),
    (2, 64),
    (2, 128),
    (2, 256),
    (2, 512),
    (2, 1024),
    (3, 16),
    (3, 32),
    (3, 64),
    (3, 128),
    (3, 256),
    (3, 512),
    (3, 1024),
    (4, 64),
    (4, 128),
    (4, 256),
    (4, 512),
    (4, 1024),
    (4, 2048),
    (4, 4096),
    (1, 32),
    (1, 64),
    (1, 128),
    (1, 256),
];

/// Which [`LEVELS`] a plan may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelLimits {
    /// Largest vector dimension d (2, 3 or 4).
    pub max_dim: usize,
    /// Largest codebook (centroids per tile).
    pub max_centroids: usize,
}

impl Default for LevelLimits {
    fn default() -> Self {
        Self {
            max_dim: 4,
            max_centroids: 1024,
        }
    }
}

impl LevelLimits {
    fn allow(&self, d: usize, n: usize) -> bool {
        d <= self.max_dim && n <= self.max_centroids
    }
}

/// Distortion of d-dimensional codebooks relative to d = 3 at the same index rate: plain k-means
/// on SmolLM2-135M weights (layers 5 and 12; relative squared error at 2, 2.5 and 3 bits) gave
/// 1.07-1.15 for d = 2 and 0.87-0.94 for d = 4. Whole conversions agree in direction:
/// --vq 3,512,192,576 (3.11 bpw) gave wiki perplexity 18.10 against 21.23 for --vq 2,64,32,576
/// (3.06 bpw), and --vq 4,256,192,576 (2.08 bpw) 53.98 against 66.33 for --vq 3,64,48,576.
/// d = 1 is Zador's high-rate figure for Gaussian sources (M_d * 2 pi ((d + 2) / d)^((d + 2) / 2)
/// relative to d = 3: 1.54 for d = 1, 1.14 for d = 2, 0.92 for d = 4, which the measured d = 2
/// and d = 4 factors bear out); it only competes above 5 bits, where d = 2 runs out of levels.
fn shape_factor(d: usize) -> f64 {
    match d {
        1 => 1.5,
        2 => 1.1,
        4 => 0.9,
        _ => 1.0,
    }
}

/// Layer loss with per-row scales relative to without, at the same (d, n): the geometric-mean
/// layer loss of SmolLM2-135M at --bits 3 fell from 6.31e-3-6.35e-3 (three seeds) to 5.81e-3
/// and 5.82e-3 (two seeds) with them.
const ROW_SCALE_FACTOR: f64 = 0.92;

/// Predicted loss of a configuration on a layer of the given sensitivity (module docs).
fn predicted_loss(sensitivity: f64, cfg: &VqConfig) -> f64 {
    let (d, n) = (cfg.d, cfg.n);
    let scales = if cfg.row_scales {
        ROW_SCALE_FACTOR
    } else {
        1.0
    };
    sensitivity * scales * shape_factor(d) * (-2.0 * (n as f64).log2() / d as f64).exp2()
}

/// Keeps the candidates (sorted by bpw) on the lower convex hull of (bpw, loss): each kept step
/// up buys less loss per bit than the one before, so the greedy below is never stuck behind a
/// poor step, and no kept candidate costs more bits for more loss.
fn convex_frontier(sorted: Vec<(VqConfig, f64, f64)>) -> Vec<(VqConfig, f64, f64)> {
    let mut hull: Vec<(VqConfig, f64, f64)> = Vec::with_capacity(sorted.len());
    for c in sorted {
        if hull.last().is_some_and(|h| c.2 >= h.2) {
            continue;
        }
        while hull.len() >= 2 {
            let (a, b) = (&hull[hull.len() - 2], &hull[hull.len() - 1]);
            // b is above the chord from a to c: not on the hull.
            let slope_ab = (b.2 - a.2) / (b.1 - a.1);
            let slope_ac = (c.2 - a.2) / (c.1 - a.1);
            if slope_ab >= slope_ac {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(c);
    }
    hull
}

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

/// Chooses one configuration per layer from the [`LEVELS`] that `limits` allow, with [`menu_config`]
/// tiles so that the weighted average bpw is <= `budget`.
pub fn plan(
    layers: &[LayerInfo],
    budget: f64,
    limits: LevelLimits,
    codebook: CodebookKind,
    rank_of: impl Fn(&LayerInfo) -> usize,
) -> Result<Vec<LayerPlan>, PlanError> {
    plan_with(layers, budget, limits, |l, d, n| {
        menu_config(d, n, l.rows, l.cols, codebook, rank_of(l))
    })
}

/// As [`plan`], with `make(layer, d, n)` building the configuration of each menu entry. An
/// entry with row scales also enters the menu without them: on a narrow layer their 16 bits
/// per row cost more than they save.
pub fn plan_with(
    layers: &[LayerInfo],
    budget: f64,
    limits: LevelLimits,
    make: impl Fn(&LayerInfo, usize, usize) -> VqConfig,
) -> Result<Vec<LayerPlan>, PlanError> {
    Ok(plan_priced(layers, budget, limits, make)?.0)
}

/// As [`plan_with`], also returning the plan's price: the smallest predicted loss reduction
/// per added bit (over the layer's weights) of any upgrade the greedy made, the exchange rate
/// at which [`plan_at_price`] plans further layers consistently with this plan.
pub fn plan_priced(
    layers: &[LayerInfo],
    budget: f64,
    limits: LevelLimits,
    make: impl Fn(&LayerInfo, usize, usize) -> VqConfig,
) -> Result<(Vec<LayerPlan>, f64), PlanError> {
    let menus = layers
        .iter()
        .map(|l| menu(l, limits, &make))
        .collect::<Result<Vec<_>, _>>()?;
    let weights: Vec<f64> = layers.iter().map(|l| (l.rows * l.cols) as f64).collect();
    let total_weights: f64 = weights.iter().sum();
    // Start every layer at its cheapest candidate.
    let mut choice = vec![0usize; layers.len()];
    let mut used: f64 = menus.iter().zip(&weights).map(|(m, w)| m[0].1 * w).sum();
    let min = used / total_weights;
    if min > budget {
        return Err(PlanError::BudgetTooSmall { budget, min });
    }
    let mut price = f64::INFINITY;
    loop {
        // The upgrade with the best loss reduction per added bit that still fits.
        let mut best: Option<(usize, f64)> = None;
        for (l, menu) in menus.iter().enumerate() {
            if let Some((added, gain)) = step_up(menu, choice[l], weights[l]) {
                if used + added > budget * total_weights {
                    continue;
                }
                if best.is_none_or(|(_, g)| gain > g) {
                    best = Some((l, gain));
                }
            }
        }
        let Some((l, gain)) = best else { break };
        used += (menus[l][choice[l] + 1].1 - menus[l][choice[l]].1) * weights[l];
        choice[l] += 1;
        price = price.min(gain);
    }
    let plans = layers
        .iter()
        .zip(&menus)
        .zip(&choice)
        .map(|((l, menu), &c)| chosen(l, menu, c))
        .collect();
    Ok((plans, price))
}

/// The step from candidate `c` of `menu` to the next on a layer of `weights` weights: the bits
/// it adds and its predicted loss reduction per added bit (None at the top of the menu). The
/// greedy and [`plan_at_price`] price upgrades by this one rule.
fn step_up(menu: &[(VqConfig, f64, f64)], c: usize, weights: f64) -> Option<(f64, f64)> {
    let (cur, next) = (&menu[c], menu.get(c + 1)?);
    let added = (next.1 - cur.1) * weights;
    Some((added, (cur.2 - next.2) / added.max(f64::MIN_POSITIVE)))
}

/// The plan entry of layer `l` at candidate `c` of its menu.
fn chosen(l: &LayerInfo, menu: &[(VqConfig, f64, f64)], c: usize) -> LayerPlan {
    LayerPlan {
        name: l.name.clone(),
        config: menu[c].0.clone(),
        bpw: menu[c].1,
    }
}

/// Plans each layer on its own at `price` (from [`plan_priced`]): every upgrade whose predicted
/// loss reduction per added bit is at least the price, as the greedy would have bought it had
/// the layer been part of that plan with the bits to pay for it.
pub fn plan_at_price(
    layers: &[LayerInfo],
    price: f64,
    limits: LevelLimits,
    make: impl Fn(&LayerInfo, usize, usize) -> VqConfig,
) -> Result<Vec<LayerPlan>, PlanError> {
    layers
        .iter()
        .map(|l| {
            let menu = menu(l, limits, &make)?;
            let weights = (l.rows * l.cols) as f64;
            let mut c = 0;
            while step_up(&menu, c, weights).is_some_and(|(_, gain)| gain >= price) {
                c += 1;
            }
            Ok(chosen(l, &menu, c))
        })
        .collect()
}

/// A layer's candidates: every allowed level that is valid on its shape (d divides the
/// columns or the last group is partial, the tile fits), with and without row scales, as
/// (configuration, bpw, predicted loss) cut to the convex frontier.
#[allow(clippy::type_complexity)]
fn menu(
    l: &LayerInfo,
    limits: LevelLimits,
    make: &impl Fn(&LayerInfo, usize, usize) -> VqConfig,
) -> Result<Vec<(VqConfig, f64, f64)>, PlanError> {
    let mut menu = Vec::new();
    for &(d, n) in LEVELS.iter().filter(|&&(d, n)| limits.allow(d, n)) {
        let cfg = make(l, d, n);
        let unscaled = cfg.row_scales.then(|| VqConfig {
            row_scales: false,
            ..cfg.clone()
        });
        for cfg in std::iter::once(cfg).chain(unscaled) {
            if cfg.validate(l.rows, l.cols).is_ok() {
                let bpw = config_bpw(&cfg, l.rows, l.cols);
                let loss = predicted_loss(l.sensitivity, &cfg);
                menu.push((cfg, bpw, loss));
            }
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
    menu.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.2.total_cmp(&b.2)));
    Ok(convex_frontier(menu))
}

/// Weighted average bpw of a plan.
pub fn average_bpw(plans: &[LayerPlan], layers: &[LayerInfo]) -> f64 {
    weighted_bpw(
        plans
            .iter()
            .zip(layers)
            .map(|(p, l)| (p.bpw, l.rows * l.cols)),
    )
}

/// Average of (bits per weight, weight count) pairs, weighted by the counts.
pub fn weighted_bpw(layers: impl IntoIterator<Item = (f64, usize)>) -> f64 {
    let (bits, weights) = layers.into_iter().fold((0.0, 0.0), |(b, w), (bpw, n)| {
        (b + bpw * n as f64, w + n as f64)
    });
    bits / f64::max(weights, 1.0)
}

/// The most index bits per weight of any level in [`LEVELS`].
pub fn top_index_bits() -> f64 {
    LEVELS
        .iter()
        .map(|&(d, n)| (n as f64).log2() / d as f64)
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(max_dim: usize) -> LevelLimits {
        LevelLimits {
            max_dim,
            ..LevelLimits::default()
        }
    }

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
        for budget in [2.2, 2.5, 3.0, 3.5, 4.0, 5.0, 6.5, 8.0] {
            let p = plan(&layers, budget, dims(3), CodebookKind::Int8, |_| 0).unwrap();
            let avg = average_bpw(&p, &layers);
            assert!(avg <= budget + 1e-12, "budget {budget}: {avg}");
            assert!(avg > budget - 0.6, "budget {budget}: only {avg} used");
        }
    }

    /// A layer planned at the price of a plan gets the level it gets when it joins that plan
    /// with exactly the bits that level costs: the same exchange rate of loss for bits.
    #[test]
    fn a_layer_at_the_plans_price_gets_what_the_joint_plan_gives_it() {
        let layers = layers();
        let head = LayerInfo {
            name: "head".into(),
            rows: 4096,
            cols: 576,
            sensitivity: 8.0,
        };
        let make = |l: &LayerInfo, d, n| menu_config(d, n, l.rows, l.cols, CodebookKind::Int8, 0);
        for budget in [2.5, 3.0, 4.0] {
            let (linear, price) = plan_priced(&layers, budget, dims(4), make).unwrap();
            assert!(price.is_finite() && price > 0.0);
            assert_eq!(linear, plan_with(&layers, budget, dims(4), make).unwrap());
            let at_price = plan_at_price(std::slice::from_ref(&head), price, dims(4), make)
                .unwrap()
                .remove(0);
            let mut all = layers.clone();
            all.push(head.clone());
            let spent: f64 = linear
                .iter()
                .zip(&layers)
                .map(|(p, l)| p.bpw * (l.rows * l.cols) as f64)
                .sum::<f64>()
                + at_price.bpw * (head.rows * head.cols) as f64;
            let total: f64 = all.iter().map(|l| (l.rows * l.cols) as f64).sum();
            let joint = plan_with(&all, spent / total, dims(4), make).unwrap();
            assert_eq!(
                joint.last().unwrap().config,
                at_price.config,
                "budget {budget}"
            );
        }
        // A dearer price buys fewer bits.
        let cheap = plan_at_price(std::slice::from_ref(&head), 1e-9, dims(4), make).unwrap();
        let dear = plan_at_price(std::slice::from_ref(&head), 1e9, dims(4), make).unwrap();
        assert!(cheap[0].bpw > dear[0].bpw, "{cheap:?} {dear:?}");
    }

    #[test]
    fn sensitive_layers_get_more_bits() {
        let layers = layers();
        let p = plan(&layers, 3.0, dims(3), CodebookKind::Int8, |_| 0).unwrap();
        let bits = |name: &str| {
            let c = &p.iter().find(|x| x.name == name).unwrap().config;
            c.index_bits() as f64 / c.d as f64
        };
        assert!(bits("down") >= bits("up"), "{p:?}");
    }

    #[test]
    fn row_scales_are_taken_where_the_layer_is_wide_enough_to_pay_for_them() {
        let mut layers = layers();
        layers.push(LayerInfo {
            name: "narrow".into(),
            rows: 16384,
            cols: 16,
            sensitivity: 4.0,
        });
        let p = plan_with(&layers, 3.0, dims(3), |l, d, n| VqConfig {
            row_scales: true,
            ..menu_config(d, n, l.rows, l.cols, CodebookKind::Int8, 0)
        })
        .unwrap();
        // 16 bits per row: 0.03 bpw on 576 columns for 8% less loss, 1 bpw on 16 (which buys
        // more as index bits).
        for x in &p {
            assert_eq!(x.config.row_scales, x.name != "narrow", "{x:?}");
        }
        assert!(average_bpw(&p, &layers) <= 3.0);
    }

    #[test]
    fn budget_below_every_configuration_is_an_error() {
        let err = plan(&layers(), 1.3, dims(3), CodebookKind::Int8, |_| 0).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--bits 1.3 is below the smallest configuration"),
            "{err}"
        );
    }

    #[test]
    fn vector_dimension_respects_max_dim_even_where_it_does_not_divide_the_columns() {
        let mut layers = layers();
        layers.push(LayerInfo {
            name: "odd".into(),
            rows: 896,
            cols: 896,
            sensitivity: 1.0,
        });
        let mut odd_dims = Vec::new();
        for budget in [1.6, 2.5, 3.0, 4.0] {
            for max_dim in [2, 3, 4] {
                let p = plan(&layers, budget, dims(max_dim), CodebookKind::Int8, |_| 0).unwrap();
                for (pl, l) in p.iter().zip(&layers) {
                    assert!(pl.config.d <= max_dim, "{budget} {max_dim}: {pl:?}");
                    pl.config.validate(l.rows, l.cols).unwrap();
                }
                odd_dims.push(p.last().unwrap().config.d);
            }
        }
        // 896 columns are no multiple of 3, yet d = 3 is on the menu: a partial last group.
        assert!(odd_dims.contains(&3), "{odd_dims:?}");
        // A layer too small to pay for d = 3 or d = 4 codebooks gets d = 2.
        let tiny = [LayerInfo {
            name: "tiny".into(),
            rows: 16,
            cols: 16,
            sensitivity: 1.0,
        }];
        let p = plan(&tiny, 3.0, dims(4), CodebookKind::Int8, |_| 0).unwrap();
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

    #[test]
    fn frontier_keeps_the_lower_convex_hull() {
        let cfg = VqConfig::new(2, 8, 1, 2);
        let points = [
            (1.0, 10.0),
            (2.0, 4.0),
            (2.5, 3.9),
            (3.0, 5.0),
            (4.0, 1.0),
            (5.0, 0.5),
        ];
        let sorted = points.iter().map(|&(b, l)| (cfg.clone(), b, l)).collect();
        let kept: Vec<(f64, f64)> = convex_frontier(sorted)
            .into_iter()
            .map(|(_, b, l)| (b, l))
            .collect();
        // (3, 5) costs more bits for more loss; (2.5, 3.9) lies above the chord from (2, 4) to
        // (4, 1).
        assert_eq!(kept, [(1.0, 10.0), (2.0, 4.0), (4.0, 1.0), (5.0, 0.5)]);
    }

    #[test]
    fn four_dimensional_codebooks_where_the_layer_pays_for_them() {
        // With up to 4096 centroids, at 3 bits the 1536 x 576 layer can afford d = 4 (4096
        // centroids cost it 0.15 bpw); on the 192 x 576 one they would cost 1.2 bpw, so it never
        // gets them. The default limit keeps every codebook at 1024 centroids or fewer.
        let mut layers = layers();
        for l in &mut layers {
            l.sensitivity = (l.rows * l.cols) as f64;
        }
        let limits = LevelLimits {
            max_centroids: 4096,
            ..LevelLimits::default()
        };
        let p = plan(&layers, 3.0, limits, CodebookKind::Int8, |_| 0).unwrap();
        let config = |name: &str| {
            let c = &p.iter().find(|x| x.name == name).unwrap().config;
            (c.d, c.n)
        };
        assert_eq!(config("up").0, 4, "{p:?}");
        assert_ne!(config("k").0, 4, "{p:?}");
        for budget in [2.0, 3.0, 4.0] {
            let p = plan(&layers, budget, dims(4), CodebookKind::Int8, |_| 0).unwrap();
            assert!(p.iter().all(|x| x.config.n <= 1024), "{p:?}");
        }
    }

    #[test]
    fn budgets_above_four_bits_are_spent_with_larger_and_then_scalar_codebooks() {
        let layers = layers();
        let at = |budget: f64| plan(&layers, budget, dims(4), CodebookKind::Int8, |_| 0).unwrap();
        // 4.5 and 5 index bits come from d = 2 with 512 and 1024 centroids.
        let p = at(5.0);
        assert!(average_bpw(&p, &layers) > 4.7, "{p:?}");
        assert!(
            p.iter().any(|x| (x.config.d, x.config.n) == (2, 1024)),
            "{p:?}"
        );
        // Above 5 bits only scalar codebooks are left.
        let p = at(7.0);
        assert!(average_bpw(&p, &layers) > 6.7, "{p:?}");
        assert!(
            p.iter().any(|x| x.config.d == 1 && x.config.n >= 64),
            "{p:?}"
        );
        // A smaller --max-centroids stops d = 2 below 5 bits; d = 1 with 32 centroids fills in.
        let limits = LevelLimits {
            max_centroids: 256,
            ..LevelLimits::default()
        };
        let p = plan(&layers, 5.0, limits, CodebookKind::Int8, |_| 0).unwrap();
        assert!(p.iter().all(|x| x.config.n <= 256), "{p:?}");
        assert!(
            p.iter().any(|x| (x.config.d, x.config.n) == (1, 32)),
            "{p:?}"
        );
    }
}
