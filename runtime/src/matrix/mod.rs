//! Weight matrices as the forward uses them: y = W x for one token ([`Matrix::matvec`]) and
//! Y = X W^T for a batch ([`Matrix::matmul`]), on Athena weights and on plain llama.cpp types,
//! without expanding the file's weights at load.
//!
//! One token reads each weight once through the dot-product kernels (`crate::kernels`). A batch
//! decodes a block of rows into a small f32 scratch and multiplies all tokens by it with `gemm`,
//! so each row is decoded once per batch instead of once per token.

mod athena;
mod plain;

pub use athena::{AthenaInput, AthenaMatrix};
pub use plain::{PlainMatrix, PlainType};

use rayon::prelude::*;

/// An input vector prepared for one weight ([`Matrix::prepare`]).
pub enum Input<'x> {
    Athena(AthenaInput),
    Q8 { q: Vec<i8>, d: Vec<f32> },
    F32(&'x [f32]),
}

pub enum Matrix<'a> {
    Athena(AthenaMatrix<'a>),
    Plain(PlainMatrix<'a>),
}

/// Rows decoded per block of a batched product.
const BLOCK_ROWS: usize = 64;

impl Matrix<'_> {
    pub fn rows(&self) -> usize {
        match self {
            Matrix::Athena(m) => m.rows(),
            Matrix::Plain(m) => m.rows(),
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            Matrix::Athena(m) => m.cols(),
            Matrix::Plain(m) => m.cols(),
        }
    }

    /// The input vector as [`Self::dot`] reads it (rotated, padded or quantized once per
    /// product instead of once per row).
    pub fn prepare<'x>(&self, x: &'x [f32]) -> Input<'x> {
        assert_eq!(x.len(), self.cols());
        match self {
            Matrix::Athena(m) => Input::Athena(m.prepare(x)),
            Matrix::Plain(m) => match m.quantized_input(x) {
                Some((q, d)) => Input::Q8 { q, d },
                None => Input::F32(x),
            },
        }
    }

    /// Row `i` of W times a prepared input.
    pub fn dot(&self, i: usize, input: &Input) -> f32 {
        match (self, input) {
            (Matrix::Athena(m), Input::Athena(x)) => m.dot(i, x),
            (Matrix::Plain(m), Input::Q8 { q, d }) => m.dot_row_q8(i, q, d),
            (Matrix::Plain(m), Input::F32(x)) => m.dot_row(i, x),
            _ => panic!("input prepared for another kind of weight"),
        }
    }

    /// y = W x (x: cols, y: rows).
    pub fn matvec(&self, x: &[f32], y: &mut [f32]) {
        self.matvec_prepared(&self.prepare(x), y);
    }

    fn matvec_prepared(&self, input: &Input, y: &mut [f32]) {
        assert_eq!(y.len(), self.rows());
        par_rows(y, |i| self.dot(i, input));
    }

    /// y = W x with x kept in f32 for plain weights too (no 8-bit activations): the output
    /// head, whose errors land directly in the logits. On SmolLM2's 3-bit file the 8-bit
    /// activations moved logits by up to 0.48 against the reference path (0.02 in f32) and
    /// turned three of five greedy continuations at near-ties, for about 15% more speed.
    pub fn matvec_f32(&self, x: &[f32], y: &mut [f32]) {
        let input = match self {
            Matrix::Plain(_) => Input::F32(x),
            Matrix::Athena(_) => self.prepare(x),
        };
        self.matvec_prepared(&input, y);
    }

    /// y_k = W_k x for several weights of the same input (q, k and v; gate and up), the rows of
    /// all of them in one parallel pass: one synchronisation instead of one per weight.
    pub fn matvec_many(ws: &[&Matrix], x: &[f32], ys: &mut [&mut [f32]]) {
        let inputs: Vec<Input> = ws.iter().map(|w| w.prepare(x)).collect();
        let mut starts = vec![0];
        for w in ws {
            starts.push(starts.last().unwrap() + w.rows());
        }
        let mut all = vec![0.0f32; *starts.last().unwrap()];
        par_rows(&mut all, |r| {
            let k = starts.partition_point(|&s| s <= r) - 1;
            ws[k].dot(r - starts[k], &inputs[k])
        });
        for (k, y) in ys.iter_mut().enumerate() {
            y.copy_from_slice(&all[starts[k]..starts[k + 1]]);
        }
    }

    /// [`Self::matmul`] of several weights of the same input.
    pub fn matmul_many(ws: &[&Matrix], x: &[f32], t: usize, ys: &mut [&mut [f32]]) {
        if t == 1 {
            return Self::matvec_many(ws, x, ys);
        }
        for (w, y) in ws.iter().zip(ys.iter_mut()) {
            w.matmul(x, t, y);
        }
    }

    /// Y = X W^T for `t` tokens (x: t x cols, y: t x rows, both row-major).
    pub fn matmul(&self, x: &[f32], t: usize, y: &mut [f32]) {
        let (m, n) = (self.cols(), self.rows());
        assert_eq!((x.len(), y.len()), (t * m, t * n));
        if t == 1 {
            return self.matvec(x, y);
        }
        match self {
            Matrix::Athena(w) => {
                let mut xr = x.to_vec();
                xr.chunks_exact_mut(m).for_each(|row| w.rotated_input(row));
                blocked_matmul(&xr, t, m, n, y, |r0, r1, out| {
                    w.decode_rotated_rows(r0, r1, out)
                });
            }
            Matrix::Plain(w) => {
                blocked_matmul(x, t, m, n, y, |r0, r1, out| w.decode_rows(r0, r1, out))
            }
        }
    }

    /// Row `i` of W, decoded (an embedding lookup).
    pub fn row(&self, i: usize, out: &mut [f32]) {
        match self {
            Matrix::Athena(w) => w.decode_row(i, out),
            Matrix::Plain(w) => w.decode_rows(i, i + 1, out),
        }
    }
}

/// A raw output pointer shared by parallel jobs that write disjoint parts of one buffer (row
/// blocks' columns here, attention heads' columns in the model).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: every user writes only its own disjoint part of the buffer.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Y (t x n) = X (t x m) W^T, W's rows produced block by block by `decode(r0, r1, out)`.
fn blocked_matmul(
    x: &[f32],
    t: usize,
    m: usize,
    n: usize,
    y: &mut [f32],
    decode: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    let out = OutPtr(y.as_mut_ptr());
    let blocks: Vec<usize> = (0..n).step_by(BLOCK_ROWS).collect();
    blocks.par_iter().for_each_init(
        || vec![0.0f32; BLOCK_ROWS * m],
        |scratch, &r0| {
            let r1 = (r0 + BLOCK_ROWS).min(n);
            let w = &mut scratch[..(r1 - r0) * m];
            decode(r0, r1, w);
            // Rebind the whole wrapper: a closure capturing only `out.0` would capture the
            // raw pointer, which is not Send.
            #[allow(clippy::redundant_locals)]
            let out = out;
            // SAFETY: dst is the t x (r1 - r0) window at column r0 of the t x n output (row
            // stride n), lhs the t x m input (row stride m), rhs W_block^T (m x (r1 - r0)): element
            // (k, j) is w[j * m + k]. All inside the slices' bounds.
            unsafe {
                gemm::gemm(
                    t,
                    r1 - r0,
                    m,
                    out.0.add(r0),
                    1,
                    n as isize,
                    false,
                    x.as_ptr(),
                    1,
                    m as isize,
                    w.as_ptr(),
                    m as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        },
    );
}

/// Fills y[i] = f(i) for every row, the rows split over the rayon threads in a few chunks each.
pub(crate) fn par_rows(y: &mut [f32], f: impl Fn(usize) -> f32 + Sync) {
    let threads = rayon::current_num_threads().max(1);
    let chunk = y.len().div_ceil(threads * 4).max(16);
    y.par_chunks_mut(chunk).enumerate().for_each(|(c, ys)| {
        for (k, v) in ys.iter_mut().enumerate() {
            *v = f(c * chunk + k);
        }
    });
}
