//! GPT-2's byte alphabet: the printable characters `vocab.json` and
//! `merges.txt` use to spell raw bytes.

use rustc_hash::FxHashMap;

/// GPT-2's printable stand-ins for bytes in `vocab.json`: printable Latin-1
/// bytes map to themselves, the other 68 to U+0100 onwards, in byte order.
pub fn bytes_to_unicode() -> Vec<char> {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let mut next = 0x100u32;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("Latin-1")
            } else {
                let c = char::from_u32(next).expect("BMP");
                next += 1;
                c
            }
        })
        .collect()
}

pub(crate) fn unicode_to_bytes() -> FxHashMap<char, u8> {
    bytes_to_unicode().into_iter().enumerate().map(|(b, c)| (c, b as u8)).collect()
}
