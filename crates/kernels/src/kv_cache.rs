//! A decoder's key/value cache and attention over it (inference: a prompt's
//! prefill, then decoding one query at a time).
//!
//! One layer's cache holds NKV heads of CAPR positions each (the capacity
//! rounded up to whole tiles of `TILE`), head after head:
//! ```text
//!   V[g][j][d] at (g * CAPR + j) * HS + d                                  rows
//!   K[g][j][d] at g * CAPR * HS + (j / TILE) * TILE * HS + d * TILE + j % TILE
//! ```
//! so each tile of TILE keys is stored transposed, (HS, TILE).
//! Why head-major: a head reads its keys and values as two contiguous
//! streams, which the hardware prefetchers follow; with the rows of all heads
//! interleaved a head's 256 bytes lie a few KB apart, a new page every few
//! keys, and decoding waited on memory. Why transposed tiles: a query's
//! scores against TILE keys are TILE independent sums, one vector lane each,
//! updated by one multiply-add per dimension, where a key-at-a-time dot
//! product ends in a horizontal sum for every key.
//!
//! The elements are f32 or bf16 (`KvElem`). Decoding reads the whole cache
//! once per token, so a bf16 cache halves what attention reads (and the
//! memory a long context holds); its values are widened exactly as they are
//! read, so attention over a bf16 cache computes the same numbers as over an
//! f32 cache holding the same rounded keys and values.

use std::borrow::Cow;

use rayon::prelude::*;

use crate::attention::softmax_row;
use crate::matmul::sgemm_serial;
use crate::quant::{bf16_bits, bf16_to_f32};
use crate::simd::dispatch;
use crate::SendPtr;

/// An element of the cache: `f32`, or `u16` holding a bf16 (the upper half
/// of an f32, rounded to nearest even, as `quant::bf16_bits`).
pub trait KvElem: Copy + Default + Send + Sync + 'static {
    /// x stored as this element (rounded to nearest even for bf16).
    fn from_f32(x: f32) -> Self;
    /// The stored value as f32 (exact).
    fn to_f32(self) -> f32;
    /// A run of elements as f32: borrowed when they already are.
    fn widen(s: &[Self]) -> Cow<'_, [f32]>;
}

impl KvElem for f32 {
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    fn widen(s: &[f32]) -> Cow<'_, [f32]> {
        Cow::Borrowed(s)
    }
}

impl KvElem for u16 {
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16_bits(x)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16_to_f32(self)
    }
    fn widen(s: &[u16]) -> Cow<'_, [f32]> {
        Cow::Owned(s.iter().map(|&h| bf16_to_f32(h)).collect())
    }
}

/// How a cache stores its keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvDtype {
    /// 4 bytes an element: the keys and values exactly as computed.
    F32,
    /// 2 bytes an element: half the memory and half what decoding reads.
    Bf16,
}

impl KvDtype {
    /// The name `--kv-dtype` takes and the benchmarks report.
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::Bf16 => "bf16",
        }
    }
    /// Parses `name`'s output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(KvDtype::F32),
            "bf16" => Some(KvDtype::Bf16),
            _ => None,
        }
    }
    /// Bytes an element takes.
    pub fn size(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::Bf16 => 2,
        }
    }
}

/// Every layer's keys and values, (L, kv_layer_len) each, in one element type.
#[derive(Clone, Debug)]
#[allow(missing_docs)] // k: the keys, v: the values, laid out as the module comment says
pub enum KvStore {
    F32 { k: Vec<f32>, v: Vec<f32> },
    Bf16 { k: Vec<u16>, v: Vec<u16> },
}

impl KvStore {
    /// Zeroed keys and values of `len` elements each, on huge pages where
    /// the kernel gives them (decoding reads them all at every token).
    pub fn zeros(dtype: KvDtype, len: usize) -> Self {
        use crate::pages::zeroed;
        match dtype {
            KvDtype::F32 => KvStore::F32 { k: zeroed(len), v: zeroed(len) },
            KvDtype::Bf16 => KvStore::Bf16 { k: zeroed(len), v: zeroed(len) },
        }
    }
    /// How this store keeps its elements.
    pub fn dtype(&self) -> KvDtype {
        match self {
            KvStore::F32 { .. } => KvDtype::F32,
            KvStore::Bf16 { .. } => KvDtype::Bf16,
        }
    }
    /// Elements the keys take (the values take as many).
    pub fn len(&self) -> usize {
        match self {
            KvStore::F32 { k, .. } => k.len(),
            KvStore::Bf16 { k, .. } => k.len(),
        }
    }
    /// Whether the store holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes the keys and values take.
    pub fn bytes(&self) -> usize {
        2 * self.len() * self.dtype().size()
    }
    /// `kv_store` into the layer at elements `layer` (one `kv_layer_len`).
    #[allow(clippy::too_many_arguments)]
    pub fn store(&mut self, layer: std::ops::Range<usize>, k: &[f32], v: &[f32], pos: usize, nkv: usize, hs: usize, cap: usize) {
        match self {
            KvStore::F32 { k: kc, v: vc } => kv_store(&mut kc[layer.clone()], &mut vc[layer], k, v, pos, nkv, hs, cap),
            KvStore::Bf16 { k: kc, v: vc } => kv_store(&mut kc[layer.clone()], &mut vc[layer], k, v, pos, nkv, hs, cap),
        }
    }
    /// `attention_cached` over the layer at elements `layer`.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        layer: std::ops::Range<usize>,
        out: &mut [f32],
        scratch: &mut [f32],
        q: &[f32],
        q_stride: usize,
        t: usize,
        p0: usize,
        (nh, nkv, hs, cap): (usize, usize, usize, usize),
    ) {
        match self {
            KvStore::F32 { k, v } => attention_cached(out, scratch, q, &k[layer.clone()], &v[layer], q_stride, t, p0, nh, nkv, hs, cap),
            KvStore::Bf16 { k, v } => attention_cached(out, scratch, q, &k[layer.clone()], &v[layer], q_stride, t, p0, nh, nkv, hs, cap),
        }
    }
}

/// Keys a transposed tile holds (one AVX-512 vector of scores).
pub const TILE: usize = 16;

/// Queries per block in `attention_cached`: the scratch holds one
/// (block, S) score matrix per head, never (T, S), so a long prompt needs no
/// T x T memory.
pub const CACHED_BLOCK: usize = 64;

/// Floats one layer's keys take for `cap` positions (its values take as many).
pub fn kv_layer_len(nkv: usize, hs: usize, cap: usize) -> usize {
    nkv * head_len(hs, cap)
}

/// Floats one head's keys take: whole tiles.
fn head_len(hs: usize, cap: usize) -> usize {
    cap.div_ceil(TILE) * TILE * hs
}

/// Scratch floats `attention_cached` needs for `nh` heads over up to `max_s` keys.
pub fn attention_cached_scratch_len(nh: usize, max_s: usize) -> usize {
    nh * CACHED_BLOCK * max_s
}

/// Stores position `pos`'s key and value rows (NKV*HS each, heads in order)
/// into one layer's cache of `cap` positions.
#[allow(clippy::too_many_arguments)]
pub fn kv_store<T: KvElem>(k_cache: &mut [T], v_cache: &mut [T], k: &[f32], v: &[f32], pos: usize, nkv: usize, hs: usize, cap: usize) {
    let per_head = head_len(hs, cap);
    assert!(pos < cap && k.len() == nkv * hs && v.len() == nkv * hs);
    assert!(k_cache.len() >= nkv * per_head && v_cache.len() >= nkv * per_head, "KV cache smaller than its capacity");
    for g in 0..nkv {
        let base = g * per_head;
        let vr = &mut v_cache[base + pos * hs..][..hs];
        vr.iter_mut().zip(&v[g * hs..(g + 1) * hs]).for_each(|(o, &x)| *o = T::from_f32(x));
        let tile = &mut k_cache[base + pos / TILE * TILE * hs..][..TILE * hs];
        for (d, &x) in k[g * hs..(g + 1) * hs].iter().enumerate() {
            tile[d * TILE + pos % TILE] = T::from_f32(x);
        }
    }
}

/// Attention for T new queries at positions P0 .. P0+T-1 over the first
/// P0 + T keys and values of one layer's cache (prefill with T = the
/// prompt's length, decoding with T = 1). Query i sees keys 0 ..= P0 + i.
/// Every query's scores come from the same per-row kernel, so a position
/// scores alike in a prompt and when decoded; decoding keeps its scores and
/// output row in registers, a prompt's block of queries takes a GEMM with
/// the values. Keeps no probabilities.
#[allow(clippy::too_many_arguments)]
pub fn attention_cached<T: KvElem>(
    out: &mut [f32],     // (T, NH*HS)
    scratch: &mut [f32], // (NH, CACHED_BLOCK, S) or more, see `attention_cached_scratch_len`
    q: &[f32],           // (T, q_stride): head h at columns h*HS..
    k_cache: &[T],       // (NKV, CAPR/TILE, HS, TILE), positions 0 .. P0+T filled
    v_cache: &[T],       // (NKV, CAPR, HS)
    q_stride: usize,
    t: usize,
    p0: usize,
    nh: usize,
    nkv: usize,
    hs: usize,
    cap: usize,
) {
    let s_len = p0 + t;
    let (oc, group, per_head) = (nh * hs, nh / nkv, head_len(hs, cap));
    assert!(nkv > 0 && nh % nkv == 0 && t >= 1 && s_len <= cap);
    assert!(out.len() >= t * oc && q.len() >= (t - 1) * q_stride + oc && k_cache.len() >= nkv * per_head && v_cache.len() >= nkv * per_head);
    let scratch_per_head = scratch.len() / nh;
    assert!(scratch_per_head >= CACHED_BLOCK.min(t) * s_len, "attention scratch too small");
    let scale = 1.0 / (hs as f32).sqrt();
    let out_ptr = SendPtr(out.as_mut_ptr());
    scratch[..nh * scratch_per_head].par_chunks_mut(scratch_per_head).enumerate().for_each(|(h, sc)| {
        let g = h / group;
        let (kt, v) = (&k_cache[g * per_head..(g + 1) * per_head], &v_cache[g * per_head..(g + 1) * per_head]);
        if t == 1 {
            // SAFETY: head h writes only its own HS columns.
            let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(h * hs), hs) };
            decode_head(o, &mut sc[..s_len], &q[h * hs..(h + 1) * hs], kt, v, scale);
            return;
        }
        // The GEMM below reads f32 values: a bf16 head's are widened once.
        let v = T::widen(&v[..s_len * hs]);
        for r0 in (0..t).step_by(CACHED_BLOCK) {
            let rows = CACHED_BLOCK.min(t - r0);
            // Keys this block can see at most: up to its last query's position.
            let keys = p0 + r0 + rows;
            let scores = &mut sc[..rows * keys];
            block_scores(scores, &q[r0 * q_stride + h * hs..], q_stride, kt, hs, keys);
            causal_softmax(scores, keys, p0 + r0 + 1, scale);
            unsafe {
                // out_h (rows, HS) = probs (rows, keys) @ V_g (keys, HS); head h's columns only.
                let o = out_ptr.get().add(r0 * oc + h * hs);
                sgemm_serial(rows, hs, keys, o, oc as isize, 1, false, scores.as_ptr(), keys as isize, 1, v.as_ptr(), hs as isize, 1);
            }
        }
    });
}

/// Scores of one query (HS) against the first `scores.len()` keys of a
/// head's tiles, times `scale`. Four partial sums over the dimensions
/// (d mod 4) keep four independent chains of multiply-adds in flight.
#[inline(always)]
fn tile_scores<T: KvElem>(scores: &mut [f32], q: &[f32], kt: &[T], scale: f32) {
    let hs = q.len();
    let whole = hs / 4 * 4;
    for (b, s) in scores.chunks_mut(TILE).enumerate() {
        let tile = &kt[b * TILE * hs..(b + 1) * TILE * hs];
        let mut acc = [[0.0f32; TILE]; 4];
        for d0 in (0..whole).step_by(4) {
            for (c, a) in acc.iter_mut().enumerate() {
                let (qd, kd): (f32, &[T; TILE]) = (q[d0 + c], tile[(d0 + c) * TILE..][..TILE].try_into().expect("tile"));
                for l in 0..TILE {
                    a[l] += qd * kd[l].to_f32();
                }
            }
        }
        for d in whole..hs {
            let kd = &tile[d * TILE..(d + 1) * TILE];
            for l in 0..TILE {
                acc[0][l] += q[d] * kd[l].to_f32();
            }
        }
        for (l, y) in s.iter_mut().enumerate() {
            *y = ((acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l])) * scale;
        }
    }
}

dispatch! {
    /// Unscaled scores (rows, keys) of a block of queries (rows `q_stride`
    /// apart, HS each) against a head's tiles.
    [Avx512]
    fn block_scores<T: KvElem>(scores: &mut [f32], q: &[f32], q_stride: usize, kt: &[T], hs: usize, keys: usize) {
        for (i, row) in scores.chunks_exact_mut(keys).enumerate() {
            tile_scores(row, &q[i * q_stride..i * q_stride + hs], kt, 1.0);
        }
    }
}

dispatch! {
    [Avx512]
    fn decode_head<T: KvElem>(out: &mut [f32], scores: &mut [f32], q: &[f32], kt: &[T], v: &[T], scale: f32) {
        // The common head sizes as compile-time lengths, so that the output
        // row lives in registers across keys.
        tile_scores(scores, q, kt, scale);
        match out.len() {
            64 => weighted_values::<T, 64>(out, scores, v),
            128 => weighted_values::<T, 128>(out, scores, v),
            _ => weighted_values_any(out, scores, v),
        }
    }
}

/// softmax(scores) @ V for one query over S = scores.len() value rows (HS,
/// contiguous). The exponentials and their sum are separate passes so that
/// both vectorize (a running float sum would keep the exponentials scalar).
#[inline(always)]
fn weighted_values<T: KvElem, const HS: usize>(out: &mut [f32], scores: &mut [f32], v: &[T]) {
    let inv = exp_normalizer(scores);
    let mut o = [0.0f32; HS];
    for (&p, vj) in scores.iter().zip(v.chunks_exact(HS)) {
        let vj: &[T; HS] = vj.try_into().expect("head size");
        for i in 0..HS {
            o[i] += p * vj[i].to_f32();
        }
    }
    out.iter_mut().zip(&o).for_each(|(y, &x)| *y = x * inv);
}

/// `weighted_values` for any head size.
#[inline(always)]
fn weighted_values_any<T: KvElem>(out: &mut [f32], scores: &mut [f32], v: &[T]) {
    let inv = exp_normalizer(scores);
    out.fill(0.0);
    for (&p, vj) in scores.iter().zip(v.chunks_exact(out.len())) {
        out.iter_mut().zip(vj).for_each(|(y, &x)| *y += p * x.to_f32());
    }
    out.iter_mut().for_each(|y| *y *= inv);
}

dispatch! {
    /// Row i of `scores` (rows of `keys`) -> the softmax of its first
    /// `first_live + i` scores (times `scale`), the masked rest 0.
    [Avx512]
    fn causal_softmax(scores: &mut [f32], keys: usize, first_live: usize, scale: f32) {
        for (i, row) in scores.chunks_exact_mut(keys).enumerate() {
            let live = first_live + i;
            softmax_row(&mut row[..live], scale);
            row[live..].fill(0.0);
        }
    }
}

/// In place: scores -> exp(scores - max); returns 1 / their sum.
#[inline(always)]
fn exp_normalizer(scores: &mut [f32]) -> f32 {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    scores.iter_mut().for_each(|s| *s = crate::simd::exp(*s - max));
    1.0 / crate::simd::sum_lanes(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key row of head `g` at position `pos` (HS), read back from the tiles.
    fn kv_key(k_cache: &[f32], g: usize, pos: usize, hs: usize, cap: usize) -> Vec<f32> {
        let tile = &k_cache[g * head_len(hs, cap) + pos / TILE * TILE * hs..][..TILE * hs];
        (0..hs).map(|d| tile[d * TILE + pos % TILE]).collect()
    }

    /// Stored rows read back unchanged, a whole tile and a partial one.
    #[test]
    fn store_reads_back() {
        let (nkv, hs, cap) = (3, 5, 21);
        let len = kv_layer_len(nkv, hs, cap);
        assert_eq!(len, 3 * 32 * 5);
        let (mut k, mut v) = (vec![0.0; len], vec![0.0; len]);
        let row = |pos: usize, o: f32| (0..nkv * hs).map(|i| pos as f32 * 100.0 + i as f32 + o).collect::<Vec<f32>>();
        for pos in 0..cap {
            kv_store(&mut k, &mut v, &row(pos, 0.0), &row(pos, 0.5), pos, nkv, hs, cap);
        }
        for pos in 0..cap {
            for g in 0..nkv {
                assert_eq!(kv_key(&k, g, pos, hs, cap), row(pos, 0.0)[g * hs..(g + 1) * hs]);
                let vb = g * len / nkv + pos * hs;
                assert_eq!(v[vb..vb + hs], row(pos, 0.5)[g * hs..(g + 1) * hs]);
            }
        }
    }
}
