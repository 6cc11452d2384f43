//! k-means where every group of points carries its own quadratic metric.
//!
//! A codebook tile spans R rows and C/d column groups. Under the Hessian, the loss of replacing a
//! d-vector w of group g by c is (w - c) M_g (w - c)^T with M_g = (U_gg^T U_gg)^-1 (ATHENA-MATH 1).
//! With one group per tile this is Euclidean k-means on whitened points; with wide tiles each group
//! has its own M_g, so assignment and the centroid update both use the per-group metric
//! (centroid a = (sum M_g)^-1 sum M_g w over its members).

use rayon::prelude::*;

use super::rng::SplitMix64;
use super::simd::with_best_simd;
use super::QuantError;

/// The points of one group: its metric (d x d, row-major) and its row vectors (count x d).
pub struct GroupPoints {
    pub metric: Vec<f32>,
    pub vectors: Vec<f32>,
}

/// Per-centroid terms of the expanded distance for one metric: M c_a and c_a^T M c_a, stored
/// dimension-major (`mc[e * n + a]`) so the scoring loop runs over contiguous centroids and
/// vectorizes. This is the conversion's hot loop (see the closing note of the quantizer work).
pub struct MetricCentroids {
    d: usize,
    n: usize,
    mc: Vec<f32>,
    cmc: Vec<f32>,
}

/// Centroids scored per step of [`MetricCentroids::nearest`].
const LANES: usize = 16;

impl MetricCentroids {
    pub fn new(metric: &[f32], centroids: &[f32], d: usize) -> Self {
        let mut scorer = Self::empty(d);
        scorer.refill(metric, centroids);
        scorer
    }

    /// A scorer without centroids, to be [`refill`](Self::refill)ed.
    pub fn empty(d: usize) -> Self {
        Self {
            d,
            n: 0,
            mc: Vec::new(),
            cmc: Vec::new(),
        }
    }

    /// Recomputes the terms for another metric and set of centroids (same d), reusing the
    /// buffers: every group has its own metric, so k-means and the assignment rescore per group,
    /// and with d = 1 tiles of a few rows a fresh scorer per group was a churn of small
    /// allocations that made glibc's thread arenas hold hundreds of MB.
    pub fn refill(&mut self, metric: &[f32], centroids: &[f32]) {
        let d = self.d;
        let n = centroids.len() / d;
        let padded = n.div_ceil(LANES) * LANES;
        self.n = padded;
        self.mc.clear();
        self.mc.resize(d * padded, 0.0);
        // Padding centroids never win: their constant term is +inf.
        self.cmc.clear();
        self.cmc.resize(padded, f32::INFINITY);
        for a in 0..n {
            let (m, q) = metric_terms(metric, &centroids[a * d..a * d + d], d);
            for (r, &v) in m.iter().enumerate().take(d) {
                self.mc[r * padded + a] = v;
            }
            self.cmc[a] = q;
        }
    }

    /// Index of the nearest centroid to w (ties go to the lower index) and its score
    /// (w M w^T is left out: it is the same for every centroid). Vectorised for the CPU's
    /// widest SIMD extension, with the same result on every CPU (`super::simd`).
    pub fn nearest(&self, w: &[f32]) -> (u32, f32) {
        with_best_simd(
            #[inline(always)]
            || self.nearest_portable(w),
        )
    }

    /// The scoring loop itself, inlined into each SIMD variant of [`Self::nearest`].
    #[inline(always)]
    fn nearest_portable(&self, w: &[f32]) -> (u32, f32) {
        let (d, n) = (self.d, self.n);
        // Each lane keeps its own best (strict <, so the lowest index among equals) and the lanes
        // are reduced once at the end: no horizontal minimum per step, so the loop vectorizes.
        let mut best_score = [f32::INFINITY; LANES];
        let mut best_index = [0u32; LANES];
        let mut scores = [0f32; LANES];
        for start in (0..n).step_by(LANES) {
            scores.copy_from_slice(&self.cmc[start..start + LANES]);
            for (e, &we) in w.iter().enumerate().take(d) {
                let m = &self.mc[e * n + start..e * n + start + LANES];
                let w2 = 2.0 * we;
                for (s, &mv) in scores.iter_mut().zip(m) {
                    *s -= w2 * mv;
                }
            }
            for lane in 0..LANES {
                let better = scores[lane] < best_score[lane];
                best_score[lane] = if better {
                    scores[lane]
                } else {
                    best_score[lane]
                };
                best_index[lane] = if better {
                    (start + lane) as u32
                } else {
                    best_index[lane]
                };
            }
        }
        let mut best = (0u32, f32::INFINITY);
        for lane in 0..LANES {
            let (i, s) = (best_index[lane], best_score[lane]);
            if s < best.1 || (s == best.1 && i < best.0) {
                best = (i, s);
            }
        }
        best
    }
}

/// M c (first d entries) and c M c: the per-centroid terms of the expanded distance
/// w M w - 2 w M c + c M c.
fn metric_terms(metric: &[f32], c: &[f32], d: usize) -> ([f32; 8], f32) {
    let mut mc = [0f32; 8];
    let mut q = 0f32;
    for r in 0..d {
        let v: f32 = (0..d).map(|s| metric[r * d + s] * c[s]).sum();
        mc[r] = v;
        q += c[r] * v;
    }
    (mc, q)
}

fn quad(metric: &[f32], x: &[f32], d: usize) -> f32 {
    let mut q = 0f32;
    for r in 0..d {
        let v: f32 = (0..d).map(|s| metric[r * d + s] * x[s]).sum();
        q += x[r] * v;
    }
    q
}

/// The two steps of a Lloyd iteration whose work grows with the points: each point's nearest
/// centroid under its group's metric, and the per-centroid sums of the update. [`SimdLloyd`]
/// runs them on the CPU threads, `gptvq_tensors::TensorLloyd` on a candle device; the small
/// d x d solves and the re-seeding of empty centroids that follow are shared (`update_centroids`).
pub trait Lloyd {
    /// Writes each point's nearest centroid to `out`, in the order of the groups' points.
    fn assign(
        &self,
        groups: &[GroupPoints],
        centroids: &[f32],
        d: usize,
        out: &mut [u32],
    ) -> Result<(), QuantError>;

    /// The sums over each centroid's members of M_g and of M_g w, and its member count.
    fn sums(
        &self,
        groups: &[GroupPoints],
        assignment: &[u32],
        d: usize,
        n: usize,
    ) -> Result<CentroidSums, QuantError>;
}

/// Per centroid a: sum of its members' metrics (`lhs`, n x d x d), of their M_g w (`rhs`,
/// n x d), and how many members it has.
pub struct CentroidSums {
    pub lhs: Vec<f64>,
    pub rhs: Vec<f64>,
    pub count: Vec<usize>,
}

/// [`Lloyd`] on the CPU threads: [`MetricCentroids`] a group at a time, sums in f64.
pub struct SimdLloyd;

impl Lloyd for SimdLloyd {
    fn assign(
        &self,
        groups: &[GroupPoints],
        centroids: &[f32],
        d: usize,
        out: &mut [u32],
    ) -> Result<(), QuantError> {
        // Each group writes its own slice of the assignment, with one scorer per worker.
        let mut slices = Vec::with_capacity(groups.len());
        let mut rest = out;
        for gp in groups {
            let (own, tail) = rest.split_at_mut(gp.vectors.len() / d);
            slices.push(own);
            rest = tail;
        }
        groups.par_iter().zip(slices).for_each_init(
            || MetricCentroids::empty(d),
            |scorer, (gp, out)| {
                scorer.refill(&gp.metric, centroids);
                for (a, w) in out.iter_mut().zip(gp.vectors.chunks_exact(d)) {
                    *a = scorer.nearest(w).0;
                }
            },
        );
        Ok(())
    }

    fn sums(
        &self,
        groups: &[GroupPoints],
        assignment: &[u32],
        d: usize,
        n: usize,
    ) -> Result<CentroidSums, QuantError> {
        let mut lhs = vec![0f64; n * d * d];
        let mut rhs = vec![0f64; n * d];
        let mut count = vec![0usize; n];
        let mut offset = 0;
        // Per centroid: how many members of the current group and the sum of their vectors
        // (zeroed again as they are folded in).
        let mut sums = vec![0f64; n * d];
        let mut counts = vec![0usize; n];
        for gp in groups {
            let members = gp.vectors.len() / d;
            for i in 0..members {
                let a = assignment[offset + i] as usize;
                counts[a] += 1;
                for e in 0..d {
                    sums[a * d + e] += gp.vectors[i * d + e] as f64;
                }
            }
            for a in 0..n {
                if counts[a] == 0 {
                    continue;
                }
                count[a] += counts[a];
                for r in 0..d {
                    for s in 0..d {
                        let m = gp.metric[r * d + s] as f64;
                        lhs[a * d * d + r * d + s] += counts[a] as f64 * m;
                        rhs[a * d + r] += m * sums[a * d + s];
                    }
                }
                counts[a] = 0;
                sums[a * d..a * d + d].fill(0.0);
            }
            offset += members;
        }
        Ok(CentroidSums { lhs, rhs, count })
    }
}

/// Fits `n` centroids (n x d, row-major) to the groups' points: k-means++ seeding under the
/// metric on a deterministic subsample, then up to `iters` Lloyd iterations, their heavy steps
/// done by `lloyd`.
pub fn fit(
    groups: &[GroupPoints],
    d: usize,
    n: usize,
    iters: usize,
    rng: &mut SplitMix64,
    lloyd: &(dyn Lloyd + Sync),
) -> Result<Vec<f32>, QuantError> {
    // Flat views of all points with the group they belong to.
    let index: Vec<(usize, usize)> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, gp)| (0..gp.vectors.len() / d).map(move |i| (g, i)))
        .collect();
    let total = index.len();
    if total == 0 {
        return Ok(vec![0.0; n * d]);
    }

    // k-means++ on at most 64 n points (every point when there are fewer).
    let sample: Vec<usize> = if total <= 64 * n {
        (0..total).collect()
    } else {
        let step = total as f64 / (64 * n) as f64;
        (0..64 * n).map(|k| (k as f64 * step) as usize).collect()
    };
    let mut centroids = seed_plus_plus(groups, &index, &sample, d, n, rng);

    // Lloyd iterations with the per-group metric.
    let mut assignment = vec![u32::MAX; total];
    let mut new_assignment = vec![0u32; total];
    for _ in 0..iters {
        lloyd.assign(groups, &centroids, d, &mut new_assignment)?;
        if new_assignment == assignment {
            break;
        }
        std::mem::swap(&mut assignment, &mut new_assignment);
        let sums = lloyd.sums(groups, &assignment, d, n)?;
        update_centroids(groups, &index, &assignment, sums, d, &mut centroids);
    }
    Ok(centroids)
}

/// k-means++ seeding under the per-group metric on the `sample` points (indices into `index`):
/// each next centroid is drawn with probability proportional to its distance to the nearest
/// centroid so far.
///
/// The distance update runs once per centroid over the whole sample, so it is written in the
/// expanded form w M w - 2 w (M c) + c M c with w M w cached per point and M c, c M c formed once
/// per group: d multiply-adds per point instead of d^2 + d (221184 synthetic 4-d points, 4096
/// centroids: 6.3 s -> 1.1 s with the chunked sums below).
fn seed_plus_plus(
    groups: &[GroupPoints],
    index: &[(usize, usize)],
    sample: &[usize],
    d: usize,
    n: usize,
    rng: &mut SplitMix64,
) -> Vec<f32> {
    let vector = |k: usize| {
        let (g, i) = index[k];
        &groups[g].vectors[i * d..i * d + d]
    };
    let m = sample.len();
    let group_of: Vec<usize> = sample.iter().map(|&k| index[k].0).collect();
    let points: Vec<f32> = sample
        .iter()
        .flat_map(|&k| vector(k).iter().copied())
        .collect();
    let self_term: Vec<f32> = (0..m)
        .map(|s| quad(&groups[group_of[s]].metric, &points[s * d..s * d + d], d))
        .collect();

    // Fixed chunks, summed in order: the draw is the same whatever rayon's scheduling.
    const CHUNK: usize = 4096;
    let mut centroids = Vec::with_capacity(n * d);
    let mut dist = vec![f32::INFINITY; m];
    let mut pick = rng.below(m as u64) as usize;
    loop {
        let c = &points[pick * d..pick * d + d];
        centroids.extend_from_slice(c);
        if centroids.len() == n * d {
            return centroids;
        }
        let terms: Vec<([f32; 8], f32)> = groups
            .iter()
            .map(|gp| metric_terms(&gp.metric, c, d))
            .collect();
        let sums: Vec<f64> = dist
            .par_chunks_mut(CHUNK)
            .enumerate()
            .map(|(chunk, dists)| {
                with_best_simd(
                    #[inline(always)]
                    || {
                        for (j, dist) in dists.iter_mut().enumerate() {
                            let s = chunk * CHUNK + j;
                            let (mc, cmc) = &terms[group_of[s]];
                            let w = &points[s * d..s * d + d];
                            let dot: f32 = w.iter().zip(mc).map(|(a, b)| a * b).sum();
                            *dist = dist.min((self_term[s] - 2.0 * dot + cmc).max(0.0));
                        }
                    },
                );
                chunk_sum(dists)
            })
            .collect();
        let sum: f64 = sums.iter().sum();
        pick = if sum > 0.0 {
            // Find the chunk by its sum, then the point inside it.
            let mut target = rng.unit() * sum;
            let mut chunk = sums.len() - 1;
            for (c, &s) in sums.iter().enumerate() {
                if target <= s {
                    chunk = c;
                    break;
                }
                target -= s;
            }
            let start = chunk * CHUNK;
            let dists = &dist[start..(start + CHUNK).min(m)];
            let mut chosen = start + dists.len() - 1;
            for (j, &x) in dists.iter().enumerate() {
                target -= x as f64;
                if target <= 0.0 {
                    chosen = start + j;
                    break;
                }
            }
            chosen
        } else {
            rng.below(m as u64) as usize
        };
    }
}

/// Sum in f64 with eight independent accumulators (a single running sum is a chain of
/// dependent additions that k-means++ would wait on once per centroid), combined in a fixed order.
fn chunk_sum(values: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let mut lanes = values.chunks_exact(8);
    for lane in &mut lanes {
        for (a, &x) in acc.iter_mut().zip(lane) {
            *a += x as f64;
        }
    }
    let tail: f64 = lanes.remainder().iter().map(|&x| x as f64).sum();
    acc.iter().sum::<f64>() + tail
}

/// Centroid a = (sum over members of M_g)^-1 (sum over members of M_g w), from the sums of
/// [`Lloyd::sums`]; an empty centroid moves to the point that is currently worst served.
fn update_centroids(
    groups: &[GroupPoints],
    index: &[(usize, usize)],
    assignment: &[u32],
    sums: CentroidSums,
    d: usize,
    centroids: &mut [f32],
) {
    let CentroidSums {
        mut lhs,
        mut rhs,
        count,
    } = sums;
    let n = count.len();
    for a in 0..n {
        if count[a] == 0 {
            continue;
        }
        if let Some(c) = solve_spd(
            &mut lhs[a * d * d..(a + 1) * d * d],
            &mut rhs[a * d..(a + 1) * d],
            d,
        ) {
            for e in 0..d {
                centroids[a * d + e] = c[e] as f32;
            }
        }
    }
    // Re-seed empty centroids at the worst-served points (deterministic: largest loss first).
    let empty: Vec<usize> = (0..n).filter(|&a| count[a] == 0).collect();
    if !empty.is_empty() {
        let mut losses: Vec<(f32, usize)> = index
            .iter()
            .enumerate()
            .map(|(k, &(g, i))| {
                let gp = &groups[g];
                let a = assignment[k] as usize;
                let diff: Vec<f32> = (0..d)
                    .map(|e| gp.vectors[i * d + e] - centroids[a * d + e])
                    .collect();
                (quad(&gp.metric, &diff, d), k)
            })
            .collect();
        losses.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        for (slot, &a) in empty.iter().enumerate() {
            if let Some(&(_, k)) = losses.get(slot) {
                let (g, i) = index[k];
                centroids[a * d..a * d + d].copy_from_slice(&groups[g].vectors[i * d..i * d + d]);
            }
        }
    }
}

/// Solves the small SPD system A x = b by Cholesky (None when A is not positive definite).
fn solve_spd(a: &mut [f64], b: &mut [f64], d: usize) -> Option<Vec<f64>> {
    for j in 0..d {
        let mut diag = a[j * d + j];
        for k in 0..j {
            diag -= a[j * d + k] * a[j * d + k];
        }
        if diag <= 0.0 || !diag.is_finite() {
            return None;
        }
        let diag = diag.sqrt();
        a[j * d + j] = diag;
        for i in j + 1..d {
            let mut v = a[i * d + j];
            for k in 0..j {
                v -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = v / diag;
        }
    }
    for i in 0..d {
        let mut v = b[i];
        for k in 0..i {
            v -= a[i * d + k] * b[k];
        }
        b[i] = v / a[i * d + i];
    }
    for i in (0..d).rev() {
        let mut v = b[i];
        for k in i + 1..d {
            v -= a[k * d + i] * b[k];
        }
        b[i] = v / a[i * d + i];
    }
    Some(b.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_well_separated_clusters() {
        let centers = [[-5.0f32, -5.0], [5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]];
        let mut rng = SplitMix64::new(7);
        let mut vectors = Vec::new();
        for k in 0..400 {
            let c = centers[k % 4];
            vectors.push(c[0] + (rng.unit() as f32 - 0.5) * 0.2);
            vectors.push(c[1] + (rng.unit() as f32 - 0.5) * 0.2);
        }
        let groups = [GroupPoints {
            metric: vec![1.0, 0.0, 0.0, 1.0],
            vectors,
        }];
        let found = fit(&groups, 2, 4, 20, &mut SplitMix64::new(1), &SimdLloyd).unwrap();
        for c in centers {
            let near = found
                .chunks(2)
                .any(|f| (f[0] - c[0]).abs() < 0.2 && (f[1] - c[1]).abs() < 0.2);
            assert!(near, "no centroid near {c:?}: {found:?}");
        }
    }

    #[test]
    fn nearest_matches_brute_force_and_breaks_ties_low() {
        let (d, n) = (3, 37);
        let mut rng = SplitMix64::new(11);
        let mut unit = || rng.unit() as f32 - 0.5;
        // A positive definite metric A^T A + I.
        let a: Vec<f32> = (0..d * d).map(|_| unit()).collect();
        let metric: Vec<f32> = (0..d * d)
            .map(|k| {
                let (r, s) = (k / d, k % d);
                (0..d).map(|t| a[t * d + r] * a[t * d + s]).sum::<f32>()
                    + if r == s { 1.0 } else { 0.0 }
            })
            .collect();
        let mut centroids: Vec<f32> = (0..n * d).map(|_| unit()).collect();
        // Centroid 30 duplicates centroid 5 (different 16-lane chunks): 5 must win its ties.
        let dup = centroids[5 * d..6 * d].to_vec();
        centroids[30 * d..31 * d].copy_from_slice(&dup);
        let scorer = MetricCentroids::new(&metric, &centroids, d);
        for k in 0..200 {
            let w: Vec<f32> = if k == 0 {
                dup.clone()
            } else {
                (0..d).map(|_| 2.0 * unit()).collect()
            };
            let dist = |c: usize| {
                let diff: Vec<f32> = (0..d).map(|e| w[e] - centroids[c * d + e]).collect();
                quad(&metric, &diff, d)
            };
            let want = (0..n).min_by(|&x, &y| dist(x).total_cmp(&dist(y))).unwrap();
            let (got, score) = scorer.nearest(&w);
            // The run-time SIMD choice changes nothing: same index, same score bits.
            let portable = scorer.nearest_portable(&w);
            assert_eq!((got, score.to_bits()), (portable.0, portable.1.to_bits()));
            if let Some(avx2) = crate::quantizer::simd::with_avx2(
                #[inline(always)]
                || scorer.nearest_portable(&w),
            ) {
                assert_eq!((got, score.to_bits()), (avx2.0, avx2.1.to_bits()));
            }
            assert!(
                got as usize == want || (dist(got as usize) - dist(want)).abs() < 1e-5,
                "point {k}: got {got}, want {want}"
            );
            if k == 0 {
                assert_eq!(got, 5);
            }
        }
    }

    #[test]
    fn metric_changes_the_weighted_centroid() {
        // Two groups share one centroid; the group with the heavier metric pulls it closer.
        let groups = [
            GroupPoints {
                metric: vec![9.0],
                vectors: vec![1.0; 10],
            },
            GroupPoints {
                metric: vec![1.0],
                vectors: vec![0.0; 10],
            },
        ];
        let c = fit(&groups, 1, 1, 5, &mut SplitMix64::new(3), &SimdLloyd).unwrap();
        assert!((c[0] - 0.9).abs() < 1e-5, "centroid {c:?}");
    }
}
