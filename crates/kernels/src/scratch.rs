//! Per-thread scratch on 64-byte boundaries, kept between calls so that a
//! GEMM packs its operands (and the few-rows product builds its panel) in
//! memory already paged in, and a vector row never straddles two cache lines.

use std::cell::RefCell;
use std::thread::LocalKey;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

pub(crate) struct Scratch(Vec<Line>);

/// Element types for which every bit pattern, all zeros included, is a value.
pub(crate) trait Plain: Copy {}
impl Plain for u16 {}
impl Plain for f32 {}

impl Scratch {
    pub(crate) const fn new() -> Self {
        Scratch(Vec::new())
    }

    /// The first `len` elements, grown (zeroed) as needed; contents left by
    /// the last use otherwise.
    pub(crate) fn get<T: Plain>(&mut self, len: usize) -> &mut [T] {
        let lines = (len * std::mem::size_of::<T>()).div_ceil(64);
        if self.0.len() < lines {
            self.0.resize(lines, Line([0; 64]));
        }
        // SAFETY: the lines cover len elements, are 64-byte aligned, and any
        // bytes are a valid T (`Plain`).
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut T, len) }
    }
}

/// Runs `f` on this thread's buffer in `key`, or on a fresh one when that is
/// in use: a thread that runs another product's task while it waits inside
/// one of its own.
pub(crate) fn with<R>(key: &'static LocalKey<RefCell<Scratch>>, f: impl FnOnce(&mut Scratch) -> R) -> R {
    key.with(|cell| {
        let (mut own, mut kept) = (Scratch::new(), cell.try_borrow_mut());
        f(kept.as_deref_mut().unwrap_or(&mut own))
    })
}
