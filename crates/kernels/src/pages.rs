//! Large buffers backed by 2 MiB pages where the kernel allows it.
//!
//! Weights, gradients, optimizer moments and activations are streamed
//! front to back, hundreds of megabytes a step or a token. On 4 KiB pages
//! every 4 KiB of such a stream is a TLB entry and a boundary the hardware
//! prefetchers stop at. Linux backs a range with transparent huge pages
//! when the process asks (`MADV_HUGEPAGE`), which is the default setting
//! (`/sys/kernel/mm/transparent_hugepage/enabled` = `madvise`) on most
//! distributions. Elsewhere, or where the kernel declines, the buffer is an
//! ordinary one.

/// Buffers smaller than this stay on ordinary pages: a huge page would
/// mostly hold other allocations.
const MIN_BYTES: usize = 4 << 20;

/// `len` zeros, on huge pages where available. The zeros are allocated
/// (`bytemuck::zeroed_vec`: `alloc_zeroed`, fresh pages from the kernel,
/// not written), so each page is faulted in on its first touch, after the
/// advice, and the kernel can back it with a huge page.
pub fn zeroed<T: bytemuck::Zeroable>(len: usize) -> Vec<T> {
    let v = bytemuck::allocation::zeroed_vec(len);
    advise_huge(&v);
    v
}

/// Asks the kernel to back `buf`'s pages with huge pages from their next
/// fault on. Advice only: a refusal leaves the buffer as it was.
fn advise_huge<T>(buf: &[T]) {
    let bytes = std::mem::size_of_val(buf);
    if bytes < MIN_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // madvise takes whole 4 KiB pages; the kernel uses huge pages for
        // the 2 MiB-aligned stretches inside the range.
        let start = buf.as_ptr() as usize;
        let (a, b) = (start.next_multiple_of(4096), (start + bytes) / 4096 * 4096);
        // SAFETY: [a, b) lies inside `buf`'s allocation; MADV_HUGEPAGE
        // changes how pages are backed, never their contents.
        unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn zeroed_is_zeros_of_the_length_asked() {
        for len in [0, 5, (8 << 20) + 3] {
            let v: Vec<f32> = super::zeroed(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 0.0));
        }
        let v: Vec<u16> = super::zeroed(3 << 20);
        assert!(v.iter().all(|&x| x == 0));
    }
}
