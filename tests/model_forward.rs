//! The block-at-a-time decoder against a plain-loop reference implementation on tiny random
//! models, plus the observer hook and weight replacement.

mod common;

use athena::checkpoint::{HfFolder, ModelConfig, RopeScaling, TensorSource};
use athena::model::{LinearKind, LinearObserver, Model, Rope};
use candle_core::{Device, Tensor};
use common::*;
use serde_json::json;
use std::collections::BTreeMap;

type Weights = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn w<'a>(t: &'a Weights, name: &str) -> &'a [f32] {
    &t[name].1
}

/// y[o] = sum_i W[o, i] x[i] (+ b[o])
fn linear(wt: &[f32], b: Option<&[f32]>, x: &[f64], out: usize) -> Vec<f64> {
    let inp = x.len();
    (0..out)
        .map(|o| {
            let s: f64 = (0..inp).map(|i| wt[o * inp + i] as f64 * x[i]).sum();
            s + b.map_or(0.0, |b| b[o] as f64)
        })
        .collect()
}

fn rms(x: &[f64], wt: &[f32], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(wt).map(|(v, g)| v * inv * *g as f64).collect()
}

fn rope(x: &mut [f64], pos: usize, theta: f64) {
    let d = x.len();
    let half = d / 2;
    let orig = x.to_vec();
    for i in 0..half {
        let f = 1.0 / theta.powf((2 * i) as f64 / d as f64);
        let (s, c) = (pos as f64 * f).sin_cos();
        x[i] = orig[i] * c - orig[i + half] * s;
        x[i + half] = orig[i + half] * c + orig[i] * s;
    }
}

/// Straightforward per-token llama forward in f64; returns logits per position.
fn reference_logits(c: &ModelConfig, t: &Weights, tokens: &[u32]) -> Vec<Vec<f64>> {
    let (h, nh, nkv, hd) = (
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
    );
    let emb = w(t, "model.embed_tokens.weight");
    let mut xs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&tok| {
            emb[tok as usize * h..(tok as usize + 1) * h]
                .iter()
                .map(|v| *v as f64)
                .collect()
        })
        .collect();
    let bias = |name: String| {
        if c.attention_bias {
            Some(w(t, &name))
        } else {
            None
        }
    };
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let mut qs = vec![];
        let mut ks = vec![];
        let mut vs = vec![];
        for (pos, x) in xs.iter().enumerate() {
            let n = rms(
                x,
                w(t, &format!("{p}.input_layernorm.weight")),
                c.rms_norm_eps,
            );
            let mut q = linear(
                w(t, &format!("{p}.self_attn.q_proj.weight")),
                bias(format!("{p}.self_attn.q_proj.bias")),
                &n,
                nh * hd,
            );
            let mut k = linear(
                w(t, &format!("{p}.self_attn.k_proj.weight")),
                bias(format!("{p}.self_attn.k_proj.bias")),
                &n,
                nkv * hd,
            );
            let v = linear(
                w(t, &format!("{p}.self_attn.v_proj.weight")),
                bias(format!("{p}.self_attn.v_proj.bias")),
                &n,
                nkv * hd,
            );
            q.chunks_mut(hd).for_each(|hq| rope(hq, pos, c.rope_theta));
            k.chunks_mut(hd).for_each(|hk| rope(hk, pos, c.rope_theta));
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        let groups = nh / nkv;
        let mut new_xs = vec![];
        for (i, x) in xs.iter().enumerate() {
            let mut attn = vec![0.0; nh * hd];
            for head in 0..nh {
                let kvh = head / groups;
                let q = &qs[i][head * hd..(head + 1) * hd];
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        let k = &ks[j][kvh * hd..(kvh + 1) * hd];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    for d in 0..hd {
                        attn[head * hd + d] += ej / z * vs[j][kvh * hd + d];
                    }
                }
            }
            let o = linear(
                w(t, &format!("{p}.self_attn.o_proj.weight")),
                None,
                &attn,
                h,
            );
            let x1: Vec<f64> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
            let n = rms(
                &x1,
                w(t, &format!("{p}.post_attention_layernorm.weight")),
                c.rms_norm_eps,
            );
            let g = linear(
                w(t, &format!("{p}.mlp.gate_proj.weight")),
                None,
                &n,
                c.intermediate_size,
            );
            let u = linear(
                w(t, &format!("{p}.mlp.up_proj.weight")),
                None,
                &n,
                c.intermediate_size,
            );
            let a: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let d = linear(w(t, &format!("{p}.mlp.down_proj.weight")), None, &a, h);
            new_xs.push(x1.iter().zip(&d).map(|(a, b)| a + b).collect());
        }
        xs = new_xs;
    }
    let head = if c.tie_word_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    xs.iter()
        .map(|x| {
            linear(
                w(t, head),
                None,
                &rms(x, w(t, "model.norm.weight"), c.rms_norm_eps),
                c.vocab_size,
            )
        })
        .collect()
}

fn check_against_reference(config: serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let tensors = random_tensors(&config, 11);
    write_folder(dir.path(), &config, &tensors);
    let folder = HfFolder::open_validated(dir.path()).unwrap();
    let model = Model::new(&folder, Device::Cpu).unwrap();
    let seqs = vec![vec![3u32, 17, 4, 49, 0, 8, 8, 21, 5], vec![1u32, 2, 3]];
    let logits = model.logits(&seqs).unwrap();
    for (seq, l) in seqs.iter().zip(&logits) {
        let got = l.to_vec2::<f32>().unwrap();
        let want = reference_logits(folder.config(), &tensors, seq);
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!(
                (*g as f64 - w).abs() < 1e-3 * w.abs().max(1.0),
                "{g} vs {w}"
            );
        }
    }
}

#[test]
fn llama_gqa_matches_reference() {
    check_against_reference(tiny_config("llama"));
}

#[test]
fn qwen2_biases_match_reference() {
    check_against_reference(tiny_config("qwen2"));
}

#[test]
fn tied_embeddings_and_no_gqa_match_reference() {
    let mut c = tiny_config("mistral");
    c["tie_word_embeddings"] = json!(true);
    c["num_key_value_heads"] = json!(4);
    check_against_reference(c);
}

#[test]
fn llama3_rope_scaling_frequencies() {
    let v = tiny_config("llama");
    let mut c = ModelConfig::from_hf_value(&v, std::path::Path::new("config.json")).unwrap();
    c.head_dim = 128;
    c.rotary_dim = 128;
    c.rope_theta = 500000.0;
    c.rope_scaling = Some(RopeScaling {
        rope_type: "llama3".into(),
        factor: 8.0,
        low_freq_factor: Some(1.0),
        high_freq_factor: Some(4.0),
        original_max_position_embeddings: Some(8192),
        ..RopeScaling::default()
    });
    let f = Rope::new(&c);
    let inv = f.inv_freq();
    let base: Vec<f64> = (0..64)
        .map(|i| 1.0 / 500000f64.powf(2.0 * i as f64 / 128.0))
        .collect();
    let pi2 = 2.0 * std::f64::consts::PI;
    for (i, (&got, &b)) in inv.iter().zip(&base).enumerate() {
        let wavelen = pi2 / b;
        let want = if wavelen < 8192.0 / 4.0 {
            b // high frequency: unchanged
        } else if wavelen > 8192.0 {
            b / 8.0 // low frequency: scaled by factor
        } else {
            let s = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
            (1.0 - s) * b / 8.0 + s * b
        };
        assert!(
            (got as f64 - want).abs() <= 1e-6 * want,
            "pair {i}: {got} vs {want}"
        );
    }
    assert_eq!(inv[0] as f64, base[0]);
    assert!((inv[63] as f64 - base[63] / 8.0).abs() < 1e-12);

    // Linear scaling divides every frequency.
    c.rope_scaling.as_mut().unwrap().rope_type = "linear".into();
    let lin = Rope::new(&c);
    for (got, b) in lin.inv_freq().iter().zip(&base) {
        assert!((*got as f64 - b / 8.0).abs() <= 1e-6 * b);
    }
}

#[test]
fn causal_prefix_logits_do_not_depend_on_later_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config("llama");
    write_folder(dir.path(), &config, &random_tensors(&config, 5));
    let folder = HfFolder::open(dir.path()).unwrap();
    let model = Model::new(&folder, Device::Cpu).unwrap();
    let out = model
        .logits(&[vec![5, 6, 7], vec![5, 6, 7, 40, 41]])
        .unwrap();
    let a = out[0].to_vec2::<f32>().unwrap();
    let b = out[1].to_vec2::<f32>().unwrap();
    for (x, y) in a.iter().flatten().zip(b[..3].iter().flatten()) {
        assert!((x - y).abs() < 1e-5);
    }
}

#[derive(Default)]
struct Recorder(Vec<(String, Vec<usize>)>);

impl LinearObserver for Recorder {
    fn observe(&mut self, layer: &str, input: &Tensor) -> candle_core::Result<()> {
        self.0.push((layer.to_string(), input.dims().to_vec()));
        Ok(())
    }
}

#[test]
fn observer_sees_every_linear_input_and_weights_can_be_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config("llama");
    write_folder(dir.path(), &config, &random_tensors(&config, 9));
    let folder = HfFolder::open(dir.path()).unwrap();
    let model = Model::new(&folder, Device::Cpu).unwrap();
    let seqs = vec![vec![1u32, 2, 3, 4], vec![9u32, 8]];
    let hidden = model.embed(&seqs).unwrap();

    let mut rec = Recorder::default();
    let out = model
        .forward_blocks(hidden.clone(), Some(&mut rec), |_, _| Ok(()))
        .unwrap();
    assert_eq!(rec.0.len(), 2 * 2 * 7);
    assert_eq!(
        rec.0[0],
        ("model.layers.0.self_attn.q_proj".to_string(), vec![4, 16])
    );
    assert_eq!(
        rec.0[3],
        ("model.layers.0.self_attn.o_proj".to_string(), vec![4, 16])
    );
    assert_eq!(
        rec.0[6],
        ("model.layers.0.mlp.down_proj".to_string(), vec![4, 32])
    );
    assert_eq!(rec.0[7].1, vec![2, 16]);
    assert_eq!(rec.0[14].0, "model.layers.1.self_attn.q_proj");
    // The observed (sequential) and unobserved (multi-threaded) paths compute the same thing.
    let plain = model
        .forward_blocks(hidden.clone(), None, |_, _| Ok(()))
        .unwrap();
    for (a, b) in out.iter().zip(&plain) {
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    }

    // Zeroing every down_proj and o_proj makes every block the identity.
    let zeroed = model
        .forward_blocks(hidden.clone(), None, |block, inputs| {
            assert_eq!(inputs.len(), 2);
            for kind in [LinearKind::O, LinearKind::Down] {
                let [o, i] = kind.shape(model.config());
                block.set_weight(
                    kind,
                    Tensor::zeros((o, i), candle_core::DType::F32, &Device::Cpu)?,
                )?;
            }
            Ok(())
        })
        .unwrap();
    let diff = |a: &Tensor, b: &Tensor| {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(diff(&zeroed[0], &hidden[0]), 0.0);
    assert!(diff(&out[0], &hidden[0]) > 0.0);

    // A replacement of the wrong shape is refused.
    let mut block = model.load_block(0).unwrap();
    let bad = Tensor::zeros((3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = block
        .set_weight(LinearKind::Q, bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.layers.0.self_attn.q_proj"), "{e}");
    assert!(model.load_block(2).is_err());
}

/// The calibration pattern: for each block, run it once with an observer to gather `X^T X`,
/// replace its weights, and let the loop run the replaced block to feed the next one.
#[test]
fn calibration_loop_observes_then_replaces_each_block() {
    struct Gram(BTreeMap<String, Tensor>);
    impl LinearObserver for Gram {
        fn observe(&mut self, layer: &str, x: &Tensor) -> candle_core::Result<()> {
            let g = x.t()?.matmul(x)?;
            let sum = match self.0.remove(layer) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            self.0.insert(layer.to_string(), sum);
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config("qwen2");
    write_folder(dir.path(), &config, &random_tensors(&config, 2));
    let folder = HfFolder::open_validated(dir.path()).unwrap();
    let model = Model::new(&folder, Device::Cpu).unwrap();
    let hidden = model.embed(&[vec![1, 2, 3], vec![4, 5, 6, 7]]).unwrap();
    let mut gram = Gram(BTreeMap::new());
    let mut seen = vec![];
    model
        .forward_blocks(hidden, None, |block, inputs| {
            model.run_block(block, inputs, Some(&mut gram))?;
            let h = &gram.0[&LinearKind::Down.hf_name(block.layer)];
            assert_eq!(h.dims(), &[32, 32]);
            // "Quantize": round every weight to a multiple of 1/8.
            for kind in LinearKind::ALL {
                let w = block.linear(kind).weight.clone();
                block.set_weight(kind, ((w * 8.0)?.round()? / 8.0)?)?;
            }
            seen.push(block.layer);
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, vec![0, 1]);
    assert_eq!(gram.0.len(), 2 * 7);
}

/// BoA's v_proj input: per kv head, the attention-weighted (causal, so convex over the prefix)
/// mix of the attention input rows.
#[test]
fn value_mix_is_a_causal_convex_mix_of_the_attention_input() {
    #[derive(Default)]
    struct Mix {
        input: BTreeMap<String, Vec<Vec<f32>>>,
        mixed: BTreeMap<String, Vec<Vec<Vec<f32>>>>,
    }
    impl LinearObserver for Mix {
        fn observe(&mut self, layer: &str, x: &Tensor) -> candle_core::Result<()> {
            if layer.ends_with("v_proj") {
                self.input.insert(layer.to_string(), x.to_vec2()?);
            }
            Ok(())
        }
        fn wants_value_mix(&self) -> bool {
            true
        }
        fn observe_value_mix(&mut self, layer: &str, m: &Tensor) -> candle_core::Result<()> {
            self.mixed.insert(layer.to_string(), m.to_vec3()?);
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config("llama");
    write_folder(dir.path(), &config, &random_tensors(&config, 4));
    let folder = HfFolder::open(dir.path()).unwrap();
    let model = Model::new(&folder, Device::Cpu).unwrap();
    let c = model.config().clone();
    let hidden = model.embed(&[vec![3u32, 1, 4, 1, 5, 9]]).unwrap();
    let mut mix = Mix::default();
    model
        .forward_blocks(hidden, Some(&mut mix), |_, _| Ok(()))
        .unwrap();
    assert_eq!(mix.mixed.len(), c.num_hidden_layers);
    for (layer, heads) in &mix.mixed {
        let x = &mix.input[layer];
        assert_eq!(heads.len(), c.num_key_value_heads);
        for rows in heads {
            assert_eq!(rows.len(), x.len());
            // The first query sees only itself.
            for (a, b) in rows[0].iter().zip(&x[0]) {
                assert!((a - b).abs() < 1e-5, "{layer}: {a} vs {b}");
            }
            for (t, row) in rows.iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    let prefix = x[..=t].iter().map(|r| r[j]);
                    let lo = prefix.clone().fold(f32::INFINITY, f32::min);
                    let hi = prefix.fold(f32::NEG_INFINITY, f32::max);
                    assert!(*v >= lo - 1e-5 && *v <= hi + 1e-5, "{layer} row {t}");
                }
            }
        }
    }
}

/// Mean next-token cross-entropy of the f64 reference model on `tokens`.
fn reference_loss(c: &ModelConfig, t: &Weights, tokens: &[u32]) -> f64 {
    let logits = reference_logits(c, t, tokens);
    let n = tokens.len() - 1;
    (0..n)
        .map(|i| {
            let max = logits[i].iter().cloned().fold(f64::MIN, f64::max);
            let log_z = max + logits[i].iter().map(|l| (l - max).exp()).sum::<f64>().ln();
            log_z - logits[i][tokens[i + 1] as usize]
        })
        .sum::<f64>()
        / n as f64
}

#[test]
fn fisher_traces_match_finite_differences_and_add_over_sequences() {
    let config = tiny_config("llama");
    let dir = tempfile::tempdir().unwrap();
    let tensors = random_tensors(&config, 13);
    write_folder(dir.path(), &config, &tensors);
    let folder = HfFolder::open_validated(dir.path()).unwrap();
    let model = Model::new(&folder, Device::Cpu).unwrap();
    let seqs = vec![
        vec![3u32, 17, 4, 49, 0, 8, 8, 21, 5],
        vec![1u32, 2, 3, 30, 31],
    ];
    let fisher = athena::convert::fisher::fisher_traces;
    let first = fisher(&model, &seqs[..1], &mut |_, _| {}).unwrap();
    let second = fisher(&model, &seqs[1..], &mut |_, _| {}).unwrap();
    let both = fisher(&model, &seqs, &mut |_, _| {}).unwrap();
    // Every linear layer and the output head (untied here).
    assert_eq!(both.len(), 2 * LinearKind::ALL.len() + 1);
    for (name, &b) in &both {
        let sum = first[name] + second[name];
        assert!(
            b > 0.0 && (b - sum).abs() <= 1e-4 * sum,
            "{name}: {b} vs {sum}"
        );
    }
    // The squared gradient norm of one layer, by central differences on the f64 reference.
    for name in [
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "lm_head.weight",
    ] {
        let eps = 1e-3f32;
        let mut squares = 0.0;
        for i in 0..tensors[name].1.len() {
            let w0 = tensors[name].1[i];
            let (hi, lo) = (w0 + eps, w0 - eps);
            let mut t = tensors.clone();
            t.get_mut(name).unwrap().1[i] = hi;
            let up = reference_loss(folder.config(), &t, &seqs[0]);
            t.get_mut(name).unwrap().1[i] = lo;
            let down = reference_loss(folder.config(), &t, &seqs[0]);
            squares += ((up - down) / (hi as f64 - lo as f64)).powi(2);
        }
        let got = first[name];
        assert!(
            (got - squares).abs() < 0.02 * squares,
            "{name}: fisher {got} vs finite differences {squares}"
        );
    }
}
