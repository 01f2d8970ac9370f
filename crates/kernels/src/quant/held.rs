//! Where a quantized matrix keeps its numbers: its own vector while it is
//! built, then a range of one buffer that all of a model's matrices share.
//!
//! Decoding streams every matrix once a token. One matrix of gpt2-124m in
//! int8 is 0.6 to 2.4 MB, each a separate allocation on 4 KiB pages, where
//! the f32 weights are one buffer on 2 MiB pages (`pages::zeroed`). Moving
//! the matrices into one such buffer made int8 decoding 15-20% faster and
//! bf16 8-10% on a Zen 4 EPYC (docs/PERFORMANCE.md).

use std::sync::Arc;

use super::{QData, QMatrix};

/// Elements of a quantized matrix.
#[derive(Clone)]
pub enum Held<T> {
    /// A vector of its own.
    Own(Vec<T>),
    /// `len` elements from byte `start` of a buffer shared with other
    /// matrices (8-byte words, so that any element type up to 8 bytes is
    /// aligned at a 64-byte start).
    #[allow(missing_docs)] // as the lines above say
    Shared { block: Arc<Vec<u64>>, start: usize, len: usize },
}

impl<T: bytemuck::Pod> std::ops::Deref for Held<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Held::Own(v) => v,
            Held::Shared { block, start, len } => {
                let bytes: &[u8] = bytemuck::cast_slice(block.as_slice());
                bytemuck::cast_slice(&bytes[*start..*start + len * std::mem::size_of::<T>()])
            }
        }
    }
}

impl<T> From<Vec<T>> for Held<T> {
    fn from(v: Vec<T>) -> Self {
        Held::Own(v)
    }
}

impl<T: bytemuck::Pod> Held<T> {
    /// The elements as a vector of their own (no copy when they are one).
    pub fn into_vec(self) -> Vec<T> {
        match self {
            Held::Own(v) => v,
            shared => shared.to_vec(),
        }
    }
}

impl<T: bytemuck::Pod + PartialEq> PartialEq for Held<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: bytemuck::Pod> std::fmt::Debug for Held<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}; {}]", std::any::type_name::<T>(), self.len())
    }
}

/// Bytes a matrix of `rows` x `cols` takes in the shared buffer, each of its
/// vectors starting on a cache line: int8 in groups of `group`, or bf16
/// (`group` None).
pub fn shared_bytes(rows: usize, cols: usize, group: Option<usize>) -> usize {
    match group {
        None => (rows * cols * 2).next_multiple_of(64),
        Some(g) => (rows * cols).next_multiple_of(64) + (rows * cols.div_ceil(g) * 4).next_multiple_of(64),
    }
}

/// Builds the shared buffer one matrix at a time, so that a model's
/// quantized matrices exist only once in memory (each is copied in and
/// dropped), then hands them back as views of it.
pub struct Together {
    block: Vec<u64>,
    used: usize,
    /// Each matrix, without its numbers where they were copied in, and
    /// where they went: (byte start, elements) of the bf16 weights, or of
    /// the int8 weights and of their scales.
    mats: Vec<(QMatrix, Option<[Span; 2]>)>,
}

/// (byte start, elements) of one vector in the shared buffer.
type Span = (usize, usize);

impl Together {
    /// Room for `bytes` (the sum of `shared_bytes` of the matrices to come),
    /// on huge pages where the kernel gives them.
    pub fn with_bytes(bytes: usize) -> Self {
        Together { block: crate::pages::zeroed(bytes.div_ceil(8)), used: 0, mats: Vec::new() }
    }

    /// Copies `m` in; returns its index. A matrix that does not fit (more
    /// than the room asked for) keeps its own vectors.
    pub fn push(&mut self, m: QMatrix) -> usize {
        let room = self.block.len() * 8;
        let mut put = |src: &[u8], elements: usize, used: &mut usize| -> Span {
            let start = *used;
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(self.block.as_mut_slice());
            bytes[start..start + src.len()].copy_from_slice(src);
            *used = (start + src.len()).next_multiple_of(64);
            (start, elements)
        };
        let need = shared_bytes(m.rows, m.cols, m.group());
        let at = if self.used + need > room {
            None
        } else {
            let mut used = self.used;
            let at = match &m.data {
                QData::Bf16(h) => [put(bytemuck::cast_slice(h), h.len(), &mut used), (0, 0)],
                QData::Int8 { q, scales, .. } => [put(bytemuck::cast_slice(q), q.len(), &mut used), put(bytemuck::cast_slice(scales), scales.len(), &mut used)],
            };
            self.used = used;
            Some(at)
        };
        let m = match at {
            // Only the shape is kept; the numbers are in the block now.
            Some(_) => QMatrix { data: empty_like(&m.data), ..m },
            None => m,
        };
        self.mats.push((m, at));
        self.mats.len() - 1
    }

    /// The matrices in the order pushed, their numbers in the shared buffer.
    pub fn finish(self) -> Vec<QMatrix> {
        let block = Arc::new(self.block);
        fn view<T>(block: &Arc<Vec<u64>>, (start, len): Span) -> Held<T> {
            Held::Shared { block: block.clone(), start, len }
        }
        self.mats
            .into_iter()
            .map(|(m, at)| {
                let Some([a, b]) = at else { return m };
                let data = match m.data {
                    QData::Bf16(_) => QData::Bf16(view(&block, a)),
                    QData::Int8 { group, .. } => QData::Int8 { q: view(&block, a), scales: view(&block, b), group },
                };
                QMatrix { data, ..m }
            })
            .collect()
    }
}

/// The same format with no numbers (the group kept).
fn empty_like(d: &QData) -> QData {
    match d {
        QData::Bf16(_) => QData::Bf16(Vec::new().into()),
        QData::Int8 { group, .. } => QData::Int8 { q: Vec::new().into(), scales: Vec::new().into(), group: *group },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::WeightLayout;

    fn w(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 * 1e-3 - 0.5).collect()
    }

    /// Matrices copied into the shared buffer read back the same numbers,
    /// from one allocation, and one that does not fit keeps its own.
    #[test]
    fn together_holds_the_same_numbers_in_one_buffer() {
        let mats = [
            QMatrix::int8(&w(96 * 40, 1), 96, 40, WeightLayout::OutIn, 32),
            QMatrix::int8(&w(70 * 33, 2), 70, 33, WeightLayout::InOut, 64),
            QMatrix::bf16(&w(64 * 9, 3), 64, 9, WeightLayout::OutIn),
        ];
        let room: usize = mats.iter().map(|m| shared_bytes(m.rows, m.cols, m.group())).sum();
        let mut t = Together::with_bytes(room);
        for (k, m) in mats.iter().enumerate() {
            assert_eq!(t.push(m.clone()), k);
        }
        let extra = QMatrix::bf16(&w(64, 4), 64, 1, WeightLayout::OutIn);
        t.push(extra.clone());
        let held = t.finish();
        assert_eq!(&held[..3], &mats[..]);
        assert_eq!(held[3], extra);
        let blocks: Vec<*const Vec<u64>> = held[..3]
            .iter()
            .flat_map(|m| match &m.data {
                QData::Int8 { q, scales, .. } => vec![block_of(q), block_of(scales)],
                QData::Bf16(h) => vec![block_of(h)],
            })
            .collect();
        assert!(blocks.iter().all(|&b| !b.is_null() && b == blocks[0]), "every matrix in one buffer");
        assert!(matches!(&held[3].data, QData::Bf16(Held::Own(_))), "a matrix past the room keeps its own vector");
    }

    fn block_of<T>(h: &Held<T>) -> *const Vec<u64> {
        match h {
            Held::Shared { block, .. } => Arc::as_ptr(block),
            Held::Own(_) => std::ptr::null(),
        }
    }
}
