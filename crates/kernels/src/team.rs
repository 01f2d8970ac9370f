//! A team of one-thread pools for data-parallel steps.
//!
//! A small model's training step is hundreds of parallel regions of tens of
//! microseconds each. Every region hands work across cores and waits at its
//! end, and each core then reads rows the other one wrote. When the cores
//! are far apart (the host places these VMs' vCPUs ~70 or ~320 ns apart)
//! that costs a third of a `baby` step. Splitting the batch instead gives
//! each core whole sequences: it runs their forward and backward passes
//! alone, start to end, and the cores meet once, to add up the gradients
//! (docs/PERFORMANCE.md, "Data-parallel shards").
//!
//! Each member of the team is a rayon pool of one thread, so the kernels a
//! shard calls see one thread and run serially on it, whatever the global
//! pool's size. The pools live for the whole process.

use std::sync::{Arc, Mutex};

use rayon::{ThreadPool, ThreadPoolBuilder};

/// The team's pools, grown on demand and never shrunk.
static TEAM: Mutex<Vec<Arc<ThreadPool>>> = Mutex::new(Vec::new());

/// The first `n` pools of the team, creating the ones missing.
fn members(n: usize) -> Vec<Arc<ThreadPool>> {
    let mut team = TEAM.lock().unwrap_or_else(|e| e.into_inner());
    while team.len() < n {
        let i = team.len();
        let pool = ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(move |_| format!("attn-shard-{i}"))
            .build()
            .expect("cannot start a thread for a data-parallel shard");
        team.push(Arc::new(pool));
    }
    team[..n].to_vec()
}

/// Runs `f(i)` for every i in 0..n, each on its own thread (member i of the
/// team), and returns when all are done. Inside `f`, rayon sees a pool of one
/// thread. The caller blocks rather than spins, so call this from outside
/// rayon's pools to keep the cores for the shards. A panic in any `f` is
/// raised here after the others finish.
pub fn for_each_shard(n: usize, f: impl Fn(usize) + Sync) {
    match n {
        0 => {}
        1 => members(1)[0].install(|| f(0)),
        _ => spawn_from(&members(n), 0, &f),
    }
}

/// Member `i`'s part when a buffer of `len` is split between `n` members:
/// contiguous, every part but the last a whole multiple of `align` (so the
/// parts can follow a kernel's fixed chunks), some possibly empty. The
/// adding-up of the shards' gradients, the gradient norm and the optimizer
/// update all split this way, so each member works on the part it touched last.
pub fn part(len: usize, n: usize, align: usize, i: usize) -> std::ops::Range<usize> {
    let size = len.div_ceil(n.max(1)).next_multiple_of(align.max(1));
    (i * size).min(len)..((i + 1) * size).min(len)
}

/// `buf` cut into the `n` parts `part` gives, in order.
pub fn parts_mut<T>(buf: &mut [T], n: usize, align: usize) -> Vec<&mut [T]> {
    let len = buf.len();
    let mut rest = buf;
    let mut parts = Vec::with_capacity(n);
    for i in 0..n {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(part(len, n, align, i).len());
        parts.push(head);
        rest = tail;
    }
    parts
}

/// Spawns `f(first)` on `pools[0]`, recurses for the rest, then waits for its
/// own spawn: the calling thread only starts jobs and waits.
fn spawn_from(pools: &[Arc<ThreadPool>], first: usize, f: &(dyn Fn(usize) + Sync)) {
    let Some((pool, rest)) = pools.split_first() else { return };
    pool.in_place_scope(|s| {
        s.spawn(move |_| f(first));
        spawn_from(rest, first + 1, f);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn parts_cover_the_buffer_in_aligned_runs() {
        for (len, n, align) in [(100, 3, 16), (5, 4, 8), (0, 2, 4), (64, 2, 32), (1000, 1, 7)] {
            let parts: Vec<_> = (0..n).map(|i| part(len, n, align, i)).collect();
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts[n - 1].end, len, "{len} {n} {align}");
            for w in parts.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert!(w[0].end == len || w[0].end % align == 0);
            }
            let mut buf: Vec<usize> = (0..len).collect();
            let cut = parts_mut(&mut buf, n, align);
            assert!(cut.iter().zip(&parts).all(|(c, r)| c.first() == r.clone().next().as_ref() && c.len() == r.len()));
        }
    }

    #[test]
    fn every_shard_runs_once_on_a_one_thread_pool_of_its_own() {
        let (seen, ones) = (Mutex::new(Vec::new()), AtomicUsize::new(0));
        for_each_shard(3, |i| {
            seen.lock().unwrap().push((i, std::thread::current().name().map(str::to_owned)));
            if rayon::current_num_threads() == 1 {
                ones.fetch_add(1, Ordering::Relaxed);
            }
        });
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        let want: Vec<_> = (0..3).map(|i| (i, Some(format!("attn-shard-{i}")))).collect();
        assert_eq!(seen, want);
        assert_eq!(ones.load(Ordering::Relaxed), 3);
    }
}
