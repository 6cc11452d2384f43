//! The discrete step of end-to-end tuning (PV-tuning's linearised V step, Malinovskii et al.
//! 2024): Adam moves the codebook values, this moves the codes. After a step's gradients are
//! known, every stored vector looks at the few centroids of its tile nearest to its current one
//! and at the first-order change of the loss, <gradient, new - current>, that moving there
//! would give; the moves with the largest predicted decrease, a fixed fraction of each layer's
//! vectors, are made. Nearest neighbours only (a trust region) because the prediction is linear:
//! far moves would look best and be worst.

use rayon::prelude::*;

/// Neighbouring centroids each vector may move to.
pub const NEIGHBOURS: usize = 8;

/// Steps whose gradients the moments average before the first move: after one step,
/// m / sqrt(v) is +-1 for every weight, and the moves would follow one batch's noise.
pub const RECODE_WARMUP: usize = 3;

/// Adam's moment estimates of the gradient with respect to one layer's stored weights, which
/// turn each step's noisy gradient into the direction and curvature a move is judged by.
pub struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
    steps: i32,
}

impl Moments {
    const BETA1: f32 = 0.9;
    const BETA2: f32 = 0.999;
    const EPS: f32 = 1e-8;

    pub fn new(len: usize) -> Self {
        Self {
            m: vec![0.0; len],
            v: vec![0.0; len],
            steps: 0,
        }
    }

    pub fn update(&mut self, grad: &[f32]) {
        self.steps += 1;
        for ((m, v), &g) in self.m.iter_mut().zip(&mut self.v).zip(grad) {
            *m = Self::BETA1 * *m + (1.0 - Self::BETA1) * g;
            *v = Self::BETA2 * *v + (1.0 - Self::BETA2) * g * g;
        }
    }

    /// Per weight, the slope and the curvature of the quadratic model Adam's step minimises:
    /// a step of `step` weight units along m / sqrt(v) minimises slope * x + curvature * x^2
    /// with slope = m and curvature = sqrt(v) / (2 step) (bias-corrected).
    fn model(&self, step: f32) -> (Vec<f32>, Vec<f32>) {
        let c1 = 1.0 - Self::BETA1.powi(self.steps);
        let c2 = 1.0 - Self::BETA2.powi(self.steps);
        let slope = self.m.iter().map(|m| m / c1).collect();
        let curvature = self
            .v
            .iter()
            .map(|v| ((v / c2).sqrt() + Self::EPS) / (2.0 * step))
            .collect();
        (slope, curvature)
    }
}

/// Moves up to `fraction` of the vectors of one layer to a neighbouring centroid of their tile,
/// where Adam's quadratic model of the loss (`moments`, with a step of `step` weight units)
/// predicts a decrease; the largest predicted decreases move. `centroids` holds every tile's
/// `n` centroids of dimension `d` stacked; `codes` the row of `centroids` each vector uses (so
/// `code / n` is its tile); the moments cover `codes.len() * d` weights in the same order.
/// Returns how many moved. Deterministic: ties go to the lower vector and centroid.
pub fn recode_layer(
    centroids: &[f32],
    d: usize,
    n: usize,
    codes: &mut [u32],
    moments: &Moments,
    step: f32,
    fraction: f64,
) -> usize {
    let budget = (fraction * codes.len() as f64).floor() as usize;
    if budget == 0 || n < 2 {
        return 0;
    }
    let neighbours = nearest_neighbours(centroids, d, n);
    let k = NEIGHBOURS.min(n - 1);
    let (slope, curvature) = moments.model(step);
    // (predicted change, vector, new code) of each vector's best move, if it lowers the loss.
    let mut moves: Vec<(f32, usize, u32)> = codes
        .par_iter()
        .enumerate()
        .filter_map(|(i, &code)| {
            let (s, c) = (&slope[i * d..(i + 1) * d], &curvature[i * d..(i + 1) * d]);
            let here = &centroids[code as usize * d..(code as usize + 1) * d];
            let mut best: Option<(f32, u32)> = None;
            for &to in &neighbours[code as usize * k..(code as usize + 1) * k] {
                let there = &centroids[to as usize * d..(to as usize + 1) * d];
                let change: f32 = (0..d)
                    .map(|j| {
                        let x = there[j] - here[j];
                        s[j] * x + c[j] * x * x
                    })
                    .sum();
                if change < best.map_or(0.0, |b| b.0) {
                    best = Some((change, to));
                }
            }
            best.map(|(change, to)| (change, i, to))
        })
        .collect();
    let take = budget.min(moves.len());
    if take < moves.len() {
        moves.select_nth_unstable_by(take, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    }
    for &(_, i, to) in &moves[..take] {
        codes[i] = to;
    }
    take
}

/// For every centroid (row of `centroids`), the rows of the `NEIGHBOURS` nearest other
/// centroids of its own tile (Euclidean), nearest first: `[rows * min(NEIGHBOURS, n - 1)]`.
fn nearest_neighbours(centroids: &[f32], d: usize, n: usize) -> Vec<u32> {
    let k = NEIGHBOURS.min(n - 1);
    let rows = centroids.len() / d;
    (0..rows)
        .into_par_iter()
        .flat_map_iter(|r| {
            let tile = r / n;
            let me = &centroids[r * d..(r + 1) * d];
            let mut near: Vec<(f32, u32)> = (tile * n..(tile + 1) * n)
                .filter(|&o| o != r)
                .map(|o| {
                    let c = &centroids[o * d..(o + 1) * d];
                    let dist: f32 = (0..d).map(|j| (c[j] - me[j]).powi(2)).sum();
                    (dist, o as u32)
                })
                .collect();
            near.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            near.truncate(k);
            near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            near.into_iter().map(|(_, o)| o)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tile of four 1-d centroids at 0, 1, 2, 3.
    const LINE: [f32; 4] = [0.0, 1.0, 2.0, 3.0];

    /// Moments after one step of `grad`: slope `grad`, curvature |grad| / (2 step).
    fn once(grad: &[f32]) -> Moments {
        let mut m = Moments::new(grad.len());
        m.update(grad);
        m
    }

    #[test]
    fn moves_go_down_the_gradient_to_a_neighbour() {
        // Vector 0 sits on 1.0 with a positive gradient (the loss falls towards 0.0), vector 1
        // on 2.0 with a negative one (towards 3.0), vector 2 has no gradient.
        let mut codes = [1, 2, 1];
        let moved = recode_layer(&LINE, 1, 4, &mut codes, &once(&[0.5, -0.25, 0.0]), 1.0, 1.0);
        assert_eq!(moved, 2);
        assert_eq!(codes, [0, 3, 1]);
    }

    #[test]
    fn only_the_largest_predicted_decreases_move() {
        // With a step of 1, one centroid away changes the loss by -|g| + |g| / 2: vector 1
        // (-0.15) and vector 2 (-0.1) gain most; two centroids away would cost 0.
        let mut codes = [1, 2, 1, 2];
        let grad = [0.1, -0.3, -0.2, 0.05];
        let moved = recode_layer(&LINE, 1, 4, &mut codes, &once(&grad), 1.0, 0.5);
        assert_eq!(moved, 2);
        assert_eq!(codes, [1, 3, 2, 2]);
    }

    #[test]
    fn a_short_step_keeps_the_codes() {
        // Step 0.4: one centroid away costs |g| (-1 + 1 / 0.8) > 0 for every vector.
        let mut codes = [1, 2];
        assert_eq!(
            recode_layer(&LINE, 1, 4, &mut codes, &once(&[0.5, -0.5]), 0.4, 1.0),
            0
        );
        assert_eq!(codes, [1, 2]);
    }

    #[test]
    fn codes_stay_in_their_tile() {
        // Two tiles of two centroids; the gradients pull both vectors up: vector 1 (tile 1)
        // moves from 10 to 11, vector 0 (tile 0, on 1.0) has no higher centroid in its tile.
        let centroids = [0.0, 1.0, 10.0, 11.0];
        let mut codes = [1, 2];
        recode_layer(
            &centroids,
            1,
            2,
            &mut codes,
            &once(&[-1.0, -1.0]),
            20.0,
            1.0,
        );
        assert_eq!(codes, [1, 3]);
    }

    #[test]
    fn neighbours_are_the_nearest_others_in_the_tile() {
        let centroids = [0.0, 0.0, 5.0, 5.0, 1.0, 0.0, 0.0, 2.0];
        let near = nearest_neighbours(&centroids, 2, 4);
        assert_eq!(&near[..3], &[2, 3, 1]);
        assert_eq!(&near[3..6], &[3, 2, 0]);
    }
}
