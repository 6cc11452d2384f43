//! Plain llama.cpp tensor types the runtime multiplies by: F32, F16, BF16 and Q8_0 (what
//! `athena-convert --type` exports, and the token embeddings of Athena files).

use crate::kernels;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PlainType {
    F32,
    F16,
    Bf16,
    Q8_0,
}

impl PlainType {
    /// Bytes of one row of `cols` values (cols a multiple of 32 for Q8_0).
    pub fn row_bytes(self, cols: usize) -> usize {
        match self {
            PlainType::F32 => 4 * cols,
            PlainType::F16 | PlainType::Bf16 => 2 * cols,
            PlainType::Q8_0 => cols / 32 * 34,
        }
    }
}

pub struct PlainMatrix<'a> {
    ty: PlainType,
    rows: usize,
    cols: usize,
    data: &'a [u8],
}

impl<'a> PlainMatrix<'a> {
    /// `data` must hold rows * row_bytes(cols) bytes (the GGUF reader checked the tensor size).
    pub fn new(ty: PlainType, rows: usize, cols: usize, data: &'a [u8]) -> Self {
        assert_eq!(data.len(), rows * ty.row_bytes(cols));
        Self {
            ty,
            rows,
            cols,
            data,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn row_data(&self, i: usize) -> &'a [u8] {
        let rb = self.ty.row_bytes(self.cols);
        &self.data[i * rb..(i + 1) * rb]
    }

    pub fn dot_row(&self, i: usize, x: &[f32]) -> f32 {
        let w = self.row_data(i);
        match self.ty {
            PlainType::F32 => {
                // SAFETY: every bit pattern is an f32; GGUF aligns tensor data (to 32 bytes by
                // default), so the middle part is the whole row except on odd alignments.
                match unsafe { w.align_to::<f32>() } {
                    (&[], v, &[]) if cfg!(target_endian = "little") => kernels::f32_dot(v, x),
                    _ => {
                        let v: Vec<f32> = w
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                            .collect();
                        kernels::f32_dot(&v, x)
                    }
                }
            }
            PlainType::F16 => kernels::f16_dot(w, x),
            PlainType::Bf16 => kernels::bf16_dot(w, x),
            PlainType::Q8_0 => kernels::q8_0_dot(w, x),
        }
    }

    /// The input of [`Self::dot_row`] for Q8_0 weights: x quantized to 8 bits per block of 32
    /// (as llama.cpp does), so each block is an integer dot product, half the instructions of
    /// converting the weights to f32. Batches ([`Self::decode_rows`]) stay in f32.
    pub fn quantized_input(&self, x: &[f32]) -> Option<(Vec<i8>, Vec<f32>)> {
        if self.ty != PlainType::Q8_0 {
            return None;
        }
        let mut q = vec![0i8; x.len()];
        let mut d = vec![0.0f32; x.len() / 32];
        kernels::quantize_q8(x, &mut q, &mut d);
        Some((q, d))
    }

    /// Row `i` times the input quantized by [`Self::quantized_input`].
    pub fn dot_row_q8(&self, i: usize, q: &[i8], d: &[f32]) -> f32 {
        kernels::q8_0_q8_dot(self.row_data(i), q, d)
    }

    /// Rows [r0, r1) as f32 into `out`.
    pub fn decode_rows(&self, r0: usize, r1: usize, out: &mut [f32]) {
        for (i, row) in (r0..r1).zip(out.chunks_exact_mut(self.cols)) {
            let w = self.row_data(i);
            match self.ty {
                PlainType::F32 => {
                    for (v, b) in row.iter_mut().zip(w.chunks_exact(4)) {
                        *v = f32::from_le_bytes(b.try_into().unwrap());
                    }
                }
                PlainType::F16 => {
                    for (v, b) in row.iter_mut().zip(w.chunks_exact(2)) {
                        *v = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                    }
                }
                PlainType::Bf16 => {
                    for (v, b) in row.iter_mut().zip(w.chunks_exact(2)) {
                        *v = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
                    }
                }
                PlainType::Q8_0 => {
                    for (vals, block) in row.chunks_exact_mut(32).zip(w.chunks_exact(34)) {
                        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
                        for (v, &q) in vals.iter_mut().zip(&block[2..]) {
                            *v = d * q as i8 as f32;
                        }
                    }
                }
            }
        }
    }
}
