//! The process's `sched_yield`, replaced by a short spin.
//!
//! rayon's idle workers call `std::thread::yield_now` (`sched_yield`) a few
//! dozen times before they sleep, and so does the thread that waits at the
//! end of a `join` for the other half. With Linux's fair scheduler a yield
//! hands the CPU to any other runnable thread for the rest of its time
//! slice, however low its priority: on the 2-core machines measured, one
//! `nice -n 19` busy loop per core took a `baby` training step from 26 to
//! 37 ms, and stray system activity did the same now and then with nothing
//! visible in `top` (docs/PERFORMANCE.md, "Yielding"). A training step
//! starts hundreds of short parallel regions, so these waits are where
//! the time went.
//!
//! A definition in the executable takes precedence over libc's at link time,
//! so every `sched_yield` in the process (rayon's, through std) lands here:
//! it spins for a few microseconds and returns. rayon then still sleeps
//! after its rounds (about 130 us of spinning instead of 33 yields), so an
//! idle process still goes quiet. Only this binary does this; the library
//! crates leave the process's `sched_yield` alone.

/// How long one "yield" spins.
const SPIN: std::time::Duration = std::time::Duration::from_micros(4);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[no_mangle]
pub extern "C" fn sched_yield() -> std::os::raw::c_int {
    let start = std::time::Instant::now();
    while start.elapsed() < SPIN {
        for _ in 0..8 {
            std::hint::spin_loop();
        }
    }
    0
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn the_process_sched_yield_is_the_spin() {
        // The dynamic linker's answer for the name is this crate's function,
        // not libc's; std's and rayon's calls are bound to it at link time.
        let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"sched_yield".as_ptr()) };
        assert_eq!(found as usize, super::sched_yield as extern "C" fn() -> std::os::raw::c_int as usize, "libc's sched_yield would run");
        std::thread::yield_now();
    }
}
