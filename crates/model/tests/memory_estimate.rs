//! The byte counts that let training refuse a batch too large for memory
//! (instead of aborting in the allocator) against what the first forward
//! pass really allocates, counted by a global allocator. One test in this
//! file, so no other test allocates while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use attn_model::{Seq2Seq, Seq2SeqBatch, Transformer, TransformerConfig};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Bytes still held after `f` (what it kept, its temporaries freed).
fn kept(f: impl FnOnce()) -> i128 {
    let before = LIVE.load(Ordering::Relaxed);
    f();
    (LIVE.load(Ordering::Relaxed) - before) as i128
}

/// Within a few KB: rayon's and the allocator's own bookkeeping moves
/// between runs, while the smallest activation buffer here, (N, C), is
/// 32 KB, so a buffer the estimate forgot would still show.
fn close(got: i128, want: i128) -> bool {
    want > 0 && (got - want).abs() <= 8192 + want / 200
}

#[test]
fn activation_estimates_match_the_allocation() {
    // Each case runs once on a twin model first, so that what the kernels
    // keep per thread (gemm's packing buffers, 2 MB) is in place before
    // counting; one worker, so that the same thread does both passes.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        let bert = TransformerConfig { tied_head: true, embed_norm: true, ..TransformerConfig::bert(50, 32, 2, 2, 64, 96) };
        let encoder = TransformerConfig { tied_head: false, ..TransformerConfig::bert(50, 32, 2, 2, 64, 96) };
        let llama = TransformerConfig { vocab_size: 50, ..TransformerConfig::llama_baby() };
        for (name, cfg) in [("gpt2", TransformerConfig::gpt2(50, 32, 3, 2, 64)), ("llama", llama), ("bert", bert), ("encoder", encoder)] {
            let (b, t) = (4, 32);
            let tokens: Vec<u32> = (0..b * t).map(|i| (i % 50) as u32).collect();
            let targets = cfg.has_head().then(|| tokens.clone());
            Transformer::new(cfg.clone(), 1).unwrap().forward(&tokens, targets.as_deref(), b, t).unwrap();
            let mut m = Transformer::new(cfg, 1).unwrap();
            let want = m.activation_bytes(b, t) as i128;
            let got = kept(|| {
                m.forward(&tokens, targets.as_deref(), b, t).unwrap();
            });
            assert!(close(got, want), "{name}: the forward pass kept {got} bytes, the estimate says {want}");
        }
        let (b, s, t) = (4, 24, 28);
        let ids = |n: usize| (0..n).map(|i| (i % 60) as u32).collect::<Vec<_>>();
        let batch = Seq2SeqBatch { b, s, t, src: ids(b * s), src_len: vec![s, s - 3, s, 1], tgt_in: ids(b * t), labels: ids(b * t) };
        Seq2Seq::preset("transformer-tiny", 60, 1).unwrap().forward(&batch, true, 0.1).unwrap();
        let mut m = Seq2Seq::preset("transformer-tiny", 60, 1).unwrap();
        let want = m.activation_bytes(b, s, t) as i128;
        let got = kept(|| {
            m.forward(&batch, true, 0.1).unwrap();
        });
        assert!(close(got, want), "seq2seq: the forward pass kept {got} bytes, the estimate says {want}");
    });
}
