//! The key/value cache: per layer, the keys and values of every position so far, stored as f16
//! (default) or as int8 with one f32 scale per position and head (`--kv q8`, half the memory).
//! It grows in steps of [`GROW`] positions up to the context size, so memory follows the tokens
//! actually held.

use crate::kernels;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KvType {
    F16,
    Q8,
}

/// Positions added per allocation step.
const GROW: usize = 256;

enum Store {
    /// f16 bits, position-major: position p, head h at (p * heads + h) * head_dim.
    F16(Vec<u8>),
    /// Signed bytes in the same layout, and one scale per (position, head).
    Q8 { q: Vec<i8>, scale: Vec<f32> },
}

impl Store {
    fn new(ty: KvType) -> Self {
        match ty {
            KvType::F16 => Store::F16(Vec::new()),
            KvType::Q8 => Store::Q8 {
                q: Vec::new(),
                scale: Vec::new(),
            },
        }
    }

    fn reserve(&mut self, positions: usize, row: usize, heads: usize) {
        match self {
            Store::F16(v) => v.reserve_exact(positions * row * 2),
            Store::Q8 { q, scale } => {
                q.reserve_exact(positions * row);
                scale.reserve_exact(positions * heads);
            }
        }
    }

    fn push(&mut self, row: &[f32], head_dim: usize) {
        match self {
            Store::F16(v) => {
                v.extend(
                    row.iter()
                        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes()),
                );
            }
            Store::Q8 { q, scale } => {
                for head in row.chunks_exact(head_dim) {
                    let amax = head.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let s = amax / 127.0;
                    let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                    q.extend(head.iter().map(|v| (v * inv).round() as i8));
                    scale.push(s);
                }
            }
        }
    }

    /// Entry `at` (position * heads + head) times `x`.
    fn dot(&self, at: usize, x: &[f32]) -> f32 {
        let hd = x.len();
        match self {
            Store::F16(v) => kernels::f16_dot(&v[at * hd * 2..(at + 1) * hd * 2], x),
            Store::Q8 { q, scale } => scale[at] * kernels::i8_dot(&q[at * hd..(at + 1) * hd], x),
        }
    }

    /// Entry `at` as f32 into `out`.
    fn read(&self, at: usize, out: &mut [f32]) {
        let hd = out.len();
        match self {
            Store::F16(v) => {
                for (o, h) in out
                    .iter_mut()
                    .zip(v[at * hd * 2..(at + 1) * hd * 2].chunks_exact(2))
                {
                    *o = half::f16::from_le_bytes([h[0], h[1]]).to_f32();
                }
            }
            Store::Q8 { q, scale } => {
                for (o, &v) in out.iter_mut().zip(&q[at * hd..(at + 1) * hd]) {
                    *o = scale[at] * v as f32;
                }
            }
        }
    }

    /// y += a * entry `at`.
    fn axpy(&self, at: usize, a: f32, y: &mut [f32]) {
        let hd = y.len();
        match self {
            Store::F16(v) => kernels::f16_axpy(&v[at * hd * 2..(at + 1) * hd * 2], a, y),
            Store::Q8 { q, scale } => {
                kernels::i8_axpy(&q[at * hd..(at + 1) * hd], a * scale[at], y)
            }
        }
    }

    fn truncate(&mut self, positions: usize, row: usize, heads: usize) {
        match self {
            Store::F16(v) => v.truncate(positions * row * 2),
            Store::Q8 { q, scale } => {
                q.truncate(positions * row);
                scale.truncate(positions * heads);
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Store::F16(v) => v.capacity(),
            Store::Q8 { q, scale } => q.capacity() + 4 * scale.capacity(),
        }
    }
}

pub struct KvCache {
    ctx: usize,
    heads: usize,
    head_dim: usize,
    len: usize,
    keys: Vec<Store>,
    values: Vec<Store>,
}

impl KvCache {
    pub fn new(ty: KvType, layers: usize, kv_heads: usize, head_dim: usize, ctx: usize) -> Self {
        Self {
            ctx,
            heads: kv_heads,
            head_dim,
            len: 0,
            keys: (0..layers).map(|_| Store::new(ty)).collect(),
            values: (0..layers).map(|_| Store::new(ty)).collect(),
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most positions it may hold.
    pub fn ctx(&self) -> usize {
        self.ctx
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.keys.iter().chain(&self.values).map(Store::bytes).sum()
    }

    /// Forgets every position from `len` on (a new conversation, or a benchmark repetition).
    pub fn truncate(&mut self, len: usize) {
        let row = self.heads * self.head_dim;
        for s in self.keys.iter_mut().chain(&mut self.values) {
            s.truncate(len, row, self.heads);
        }
        self.len = self.len.min(len);
    }

    /// Appends the keys and values (`t` rows of kv_heads * head_dim each) of `t` new positions
    /// to `layer`. Call for every layer, then [`Self::advance`] by `t`.
    pub fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let row = self.heads * self.head_dim;
        let t = k.len() / row;
        let have = self.len + t;
        for s in [&mut self.keys[layer], &mut self.values[layer]] {
            if have > s_capacity(s, row) {
                let want = (have.div_ceil(GROW) * GROW).min(self.ctx).max(have);
                s.reserve(want - self.len, row, self.heads);
            }
        }
        for (kr, vr) in k.chunks_exact(row).zip(v.chunks_exact(row)) {
            self.keys[layer].push(kr, self.head_dim);
            self.values[layer].push(vr, self.head_dim);
        }
    }

    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Key of `pos`, kv head `head`, times `q`.
    pub fn key_dot(&self, layer: usize, pos: usize, head: usize, q: &[f32]) -> f32 {
        self.keys[layer].dot(pos * self.heads + head, q)
    }

    /// Keys (`values` false) or values of positions 0..len of kv head `head` as f32 rows of
    /// head_dim into `out`.
    pub fn read_head(&self, layer: usize, values: bool, head: usize, len: usize, out: &mut [f32]) {
        let store = if values {
            &self.values[layer]
        } else {
            &self.keys[layer]
        };
        for (p, row) in out[..len * self.head_dim]
            .chunks_exact_mut(self.head_dim)
            .enumerate()
        {
            store.read(p * self.heads + head, row);
        }
    }

    /// out += a * value of `pos`, kv head `head`.
    pub fn value_axpy(&self, layer: usize, pos: usize, head: usize, a: f32, out: &mut [f32]) {
        self.values[layer].axpy(pos * self.heads + head, a, out)
    }
}

fn s_capacity(s: &Store, row: usize) -> usize {
    match s {
        Store::F16(v) => v.capacity() / (2 * row),
        Store::Q8 { q, .. } => q.capacity() / row,
    }
}
