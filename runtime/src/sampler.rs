//! Choosing the next token from the logits, in llama.cpp's order: repeat penalty over the last
//! tokens, then top-k, top-p, min-p, temperature and a draw (greedy when the temperature is 0).

#[derive(Clone, Debug)]
pub struct SamplerOptions {
    /// 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities add up to p (1: all).
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one (0: none).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens by this (1: off).
    pub repeat_penalty: f32,
    /// How many of the last tokens the repeat penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerOptions {
    /// llama.cpp's defaults.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

pub struct Sampler {
    opts: SamplerOptions,
    rng: SplitMix64,
}

/// SplitMix64: a seeded run must give the same tokens on every platform and version, which a
/// fixed ten-line generator guarantees and `rand`'s StdRng does not promise.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }
}

impl Sampler {
    pub fn new(opts: SamplerOptions) -> Self {
        let rng = SplitMix64(opts.seed);
        Self { opts, rng }
    }

    /// The next token after `history` (the tokens so far), given its `logits`.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let o = &self.opts;
        let mut logits = logits.to_vec();
        if o.repeat_penalty != 1.0 {
            let recent = &history[history.len().saturating_sub(o.repeat_last_n)..];
            let mut seen = std::collections::HashSet::new();
            for &id in recent {
                if let Some(l) = logits.get_mut(id as usize) {
                    if seen.insert(id) {
                        *l = if *l > 0.0 {
                            *l / o.repeat_penalty
                        } else {
                            *l * o.repeat_penalty
                        };
                    }
                }
            }
        }
        if o.temperature <= 0.0 {
            return argmax(&logits);
        }
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if o.top_k > 0 {
            cand.truncate(o.top_k);
        }
        let probs = |cand: &[(u32, f32)]| -> Vec<f32> {
            let max = cand[0].1;
            let e: Vec<f32> = cand.iter().map(|c| (c.1 - max).exp()).collect();
            let sum: f32 = e.iter().sum();
            e.into_iter().map(|v| v / sum).collect()
        };
        if o.top_p < 1.0 {
            let p = probs(&cand);
            let mut acc = 0.0;
            let keep = p
                .iter()
                .position(|&v| {
                    acc += v;
                    acc >= o.top_p
                })
                .map_or(cand.len(), |i| i + 1);
            cand.truncate(keep.max(1));
        }
        if o.min_p > 0.0 {
            let p = probs(&cand);
            let keep = p.iter().take_while(|&&v| v >= o.min_p * p[0]).count();
            cand.truncate(keep.max(1));
        }
        for c in cand.iter_mut() {
            c.1 /= o.temperature;
        }
        let p = probs(&cand);
        let r = self.rng.next_f32();
        let mut acc = 0.0;
        for (c, &pv) in cand.iter().zip(&p) {
            acc += pv;
            if r < acc {
                return c.0;
            }
        }
        cand[cand.len() - 1].0
    }
}

/// The index of the largest logit (the first on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_after_the_penalty() {
        let mut s = Sampler::new(SamplerOptions {
            temperature: 0.0,
            repeat_penalty: 2.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&[1.0, 3.0, 2.0], &[]), 1);
        // Token 1 was just seen: 3 / 2 = 1.5 < 2.
        assert_eq!(s.sample(&[1.0, 3.0, 2.0], &[1]), 2);
    }

    #[test]
    fn seeded_draws_repeat_and_respect_top_k() {
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        let opts = SamplerOptions {
            temperature: 1.0,
            top_k: 3,
            top_p: 1.0,
            min_p: 0.0,
            seed: 42,
            ..Default::default()
        };
        let run = |o: &SamplerOptions| {
            let mut s = Sampler::new(o.clone());
            (0..50).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        let a = run(&opts);
        assert_eq!(a, run(&opts));
        // The three largest logits (value 1.8) sit at i % 7 == 6: 6, 13, 20, ...; with top-k 3
        // only the first three of them (sorted by value, stable order not guaranteed) remain.
        assert!(a.iter().all(|&t| t % 7 == 6), "{a:?}");
        let other = run(&SamplerOptions { seed: 7, ..opts });
        assert_ne!(a, other);
    }

    #[test]
    fn min_p_keeps_only_the_likely() {
        let mut s = Sampler::new(SamplerOptions {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            seed: 1,
            ..Default::default()
        });
        // exp(-5) relative to the top: far below 0.5.
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.0, 5.0, 0.0], &[]), 1);
        }
    }
}
