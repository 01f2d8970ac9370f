//! The size of the last-level cache, which decides how the decoding kernels
//! walk quantized weights (`quant::Reading`).

use std::sync::OnceLock;

/// Assumed where the size can't be read (no Linux sysfs): a server L3 of
/// the size the choice was measured on.
const FALLBACK: usize = 32 << 20;

/// Bytes of the largest cache CPU 0 reports: Linux lists each level under
/// /sys/devices/system/cpu/cpu0/cache/index*/ with its `level` and a `size`
/// such as "32768K". Read once.
pub fn last_level_bytes() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| read_sysfs("/sys/devices/system/cpu/cpu0/cache").unwrap_or(FALLBACK))
}

fn read_sysfs(dir: &str) -> Option<usize> {
    let mut best: Option<(u32, usize)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
        let (Some(level), Some(size)) = (read("level"), read("size")) else { continue };
        let (Ok(level), Some(bytes)) = (level.trim().parse::<u32>(), parse_size(size.trim())) else { continue };
        // The highest level, and the largest if CPU 0 lists two of it.
        best = match best {
            Some(old) if old >= (level, bytes) => Some(old),
            _ => Some((level, bytes)),
        };
    }
    best.map(|(_, bytes)| bytes)
}

/// "32768K", "2M" or a plain byte count.
fn parse_size(s: &str) -> Option<usize> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = digits.parse().ok()?;
    match unit {
        "" => Some(n),
        "K" => Some(n << 10),
        "M" => Some(n << 20),
        "G" => Some(n << 30),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_sysfs_writes_them() {
        assert_eq!(parse_size("32768K"), Some(32 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn this_machine_has_a_last_level_cache() {
        // Linux CI machines list their caches; elsewhere the fallback.
        assert!(last_level_bytes() >= 1 << 20, "{} bytes", last_level_bytes());
    }
}
