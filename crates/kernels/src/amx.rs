//! Intel AMX tiles for bf16 matrix products with f32 accumulation: the
//! microkernel that `tiles.rs` drives.
//!
//! A tile is up to 16 rows of 64 bytes; `tdpbf16ps c, a, b` adds
//! a (16, 32 bf16) @ b (32, 16) into c (16, 16 f32), with b stored in pairs:
//! row p of the b tile holds (b[2p][j], b[2p+1][j]) for j = 0..16 ("VNNI"
//! layout). The microkernel keeps a 32x32 block of C in four tiles (tmm0-3),
//! loads two A tiles (tmm4-5) and two B tiles (tmm6-7) per step of 32 along K,
//! and issues four products: 4 KiB read per 32K multiply-adds.
//!
//! The instructions are written in inline assembly, so the binary needs no
//! target feature to build; they run only after `available()` said yes.
//! `tdpbf16ps` reads denormal bf16 inputs as zero and flushes denormal
//! results, which the f32-emulated path does not: the two agree to rounding
//! for values of training's magnitudes, not bit for bit.

use std::arch::asm;
use std::sync::OnceLock;

use crate::mixed::TILE;

/// The 64-byte operand of `ldtilecfg`: palette 1, then bytes per row and rows
/// for each of the eight tiles.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// True when this CPU has AMX-TILE and AMX-BF16 and the kernel let this
/// process use the tile registers. Checked once.
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| cpu_has_amx_bf16() && request_tile_permission())
}

// `__cpuid` is safe from Rust 1.87 on; the workspace supports 1.80.
#[allow(unused_unsafe)]
fn cpu_has_amx_bf16() -> bool {
    // CPUID leaf 7 sub-leaf 0, EDX: bit 22 AMX-BF16, bit 24 AMX-TILE.
    let leaf0 = unsafe { std::arch::x86_64::__cpuid(0) };
    if leaf0.eax < 7 {
        return false;
    }
    let l7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    l7.edx & (1 << 22) != 0 && l7.edx & (1 << 24) != 0
}

/// Linux grants the 8 KiB of tile state only to a process that asks for it
/// (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); using a tile
/// before that is a SIGILL.
#[cfg(target_os = "linux")]
fn request_tile_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn request_tile_permission() -> bool {
    false
}

/// Configures all eight tiles as 16 rows x 64 bytes on the calling thread
/// (tile state is per thread). Pair with `release`.
///
/// Safety: `available()` must have returned true.
pub(crate) unsafe fn configure() {
    let mut cfg = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
    for t in 0..8 {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    asm!("ldtilecfg [{0}]", in(reg) &cfg as *const TileConfig, options(nostack, readonly));
}

/// Returns the tile registers to the init state, so that the thread's next
/// context switch does not save 8 KiB of them.
pub(crate) unsafe fn release() {
    asm!("tilerelease", options(nostack, nomem));
}

/// c (32, 32) f32 [+]= sum over `kt` steps of
/// [a0; a1] (32, 32 bf16) @ [b0 b1] (32, 32 bf16, VNNI pairs), c's rows
/// `c_stride` bytes apart; the sum starts from c when `accumulate`.
/// a0 / a1 hold the packed tiles of rows 0-15 / 16-31 for consecutive K steps,
/// `TILE` elements apart; b0 / b1 those of columns 0-15 / 16-31.
///
/// Safety: `configure()` ran on this thread; each pointer covers `kt` tiles;
/// `c` covers 32 rows of 32 floats.
pub(crate) unsafe fn kernel_32x32(a0: *const u16, a1: *const u16, b0: *const u16, b1: *const u16, kt: usize, c: *mut f32, c_stride: usize, accumulate: bool) {
    const ROW: usize = 64; // bytes per packed tile row
    let c_rows16 = c.byte_add(16 * c_stride);
    if accumulate {
        asm!(
            "tileloadd tmm0, [{c} + {s}*1]",
            "tileloadd tmm1, [{c1} + {s}*1]",
            "tileloadd tmm2, [{c2} + {s}*1]",
            "tileloadd tmm3, [{c3} + {s}*1]",
            c = in(reg) c, c1 = in(reg) c.add(16), c2 = in(reg) c_rows16, c3 = in(reg) c_rows16.add(16), s = in(reg) c_stride,
            options(nostack, readonly),
        );
    } else {
        asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
    }
    for t in 0..kt {
        let off = t * TILE;
        if t + 1 < kt {
            // The next step's four tiles into L1 while this step's products
            // run: the tile loads, not the products, bound this loop (~6% on
            // gpt2-124m's layer shapes, 3 alternating rounds).
            let next = off + TILE;
            for line in 0..16 {
                for p in [a0, a1, b0, b1] {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.add(next + 32 * line) as *const i8);
                }
            }
        }
        asm!(
            "tileloadd tmm4, [{a0} + {s}*1]",
            "tileloadd tmm6, [{b0} + {s}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b1} + {s}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {s}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) a0.add(off),
            a1 = in(reg) a1.add(off),
            b0 = in(reg) b0.add(off),
            b1 = in(reg) b1.add(off),
            s = in(reg) ROW,
            options(nostack, readonly),
        );
    }
    asm!(
        "tilestored [{c} + {s}*1], tmm0",
        "tilestored [{c1} + {s}*1], tmm1",
        "tilestored [{c2} + {s}*1], tmm2",
        "tilestored [{c3} + {s}*1], tmm3",
        c = in(reg) c, c1 = in(reg) c.add(16), c2 = in(reg) c_rows16, c3 = in(reg) c_rows16.add(16), s = in(reg) c_stride,
        options(nostack),
    );
}
