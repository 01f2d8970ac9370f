//! Pre-tokenization: splitting text into the pieces that BPE works on.
//!
//! GPT-2's and cl100k's patterns are matched by hand-written scanners that
//! give exactly the pieces the regex gives (a test checks this against the
//! regex on random strings built from the characters where the two could
//! disagree). The regex engine spends most of its time on the lookahead in
//! `\s+(?!\S)`; a scanner decides the same thing by looking at one character.
//! Any other pattern goes through `fancy-regex`.
//!
//! Character classes come from the `regex-syntax` crate's Unicode tables, so
//! `\p{L}`, `\p{N}` and `\s` mean exactly what they mean in the regex.

use std::sync::OnceLock;

use crate::bpe::{CL100K_PATTERN, GPT2_PATTERN};
use crate::{Result, TokenizerError};

/// Splits text into pieces.
pub enum Splitter {
    /// GPT-2's pattern, hand-written (no regex engine).
    Gpt2,
    /// cl100k's pattern, hand-written.
    Cl100k,
    /// Any other pattern, through `fancy_regex`.
    Regex(Box<fancy_regex::Regex>),
}

impl Splitter {
    /// The splitter for `pattern`: the hand-written ones for GPT-2's and
    /// cl100k's exact text, else the regex (an invalid one is an error).
    pub fn new(pattern: &str) -> Result<Self> {
        Ok(match pattern {
            GPT2_PATTERN => Splitter::Gpt2,
            CL100K_PATTERN => Splitter::Cl100k,
            custom => Splitter::Regex(Box::new(
                fancy_regex::Regex::new(custom)
                    .map_err(|e| TokenizerError::Format { path: "<pattern>".into(), msg: format!("the pre-tokenizer pattern does not compile: {e}") })?,
            )),
        })
    }

    /// Calls `f` on each piece of `text`, in order; the pieces cover the text.
    pub fn for_each_piece<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) {
        let mut i = 0;
        match self {
            Splitter::Gpt2 | Splitter::Cl100k => {
                let cl100k = matches!(self, Splitter::Cl100k);
                while i < text.len() {
                    let end = if cl100k { cl100k_piece(text, i) } else { gpt2_piece(text, i) };
                    f(&text[i..end]);
                    i = end;
                }
            }
            Splitter::Regex(re) => {
                for m in re.find_iter(text) {
                    let Ok(m) = m else {
                        // fancy-regex gives up only past its backtracking limit; the
                        // unmatched rest becomes one piece, so no text is lost or repeated.
                        break;
                    };
                    // Text between matches is a piece of its own (HF's Split with
                    // "Isolated"); the built-in patterns leave no gaps, but a custom
                    // one may, and dropping it would lose text.
                    if m.start() > i {
                        f(&text[i..m.start()]);
                    }
                    if m.end() > m.start() {
                        f(m.as_str());
                    }
                    i = m.end();
                }
                if i < text.len() {
                    f(&text[i..]);
                }
            }
        }
    }

    /// Splits `text` into about `n` consecutive chunks whose pieces, taken
    /// together, are exactly the pieces of the whole text, so chunks can be
    /// handled on separate threads without changing a single id.
    ///
    /// A cut goes just after a newline with non-whitespace on both sides. No
    /// piece of either built-in pattern spans such a newline, and the piece
    /// that ends there does not depend on what follows. A custom pattern gives
    /// no such promise, so its text stays one chunk.
    pub fn chunks<'t>(&self, text: &'t str, n: usize) -> Vec<&'t str> {
        if n <= 1 || matches!(self, Splitter::Regex(_)) {
            return vec![text];
        }
        let b = text.as_bytes();
        let mut cuts = vec![0];
        for k in 1..n {
            let from = (k * b.len() / n).max(*cuts.last().unwrap());
            let cut = b[from..].iter().enumerate().filter(|&(_, &x)| x == b'\n').map(|(o, _)| from + o).find(|&nl| {
                let before = text[..nl].chars().next_back();
                let after = text[nl + 1..].chars().next();
                matches!((before, after), (Some(p), Some(q)) if cat(p) != Cat::Space && cat(q) != Cat::Space)
            });
            match cut {
                Some(nl) if nl + 1 > *cuts.last().unwrap() => cuts.push(nl + 1),
                Some(_) => {}
                None => break,
            }
        }
        cuts.push(b.len());
        cuts.windows(2).filter(|w| w[1] > w[0]).map(|w| &text[w[0]..w[1]]).collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cat {
    Letter,
    Number,
    Space,
    Other,
}

/// Sorted code-point ranges of `\p{L}`, `\p{N}` and `\s`, and a lookup table for the BMP.
struct Tables {
    bmp: Vec<Cat>,
    astral: Vec<(u32, u32, Cat)>,
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let mut ranges = Vec::new();
        for (class, c) in [(r"\p{L}", Cat::Letter), (r"\p{N}", Cat::Number), (r"\s", Cat::Space)] {
            let hir = regex_syntax::parse(class).expect("a Unicode class");
            let regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(u)) = hir.kind() else { unreachable!("{class} parses to a Unicode class") };
            ranges.extend(u.ranges().iter().map(|r| (r.start() as u32, r.end() as u32, c)));
        }
        ranges.sort_unstable_by_key(|r| r.0);
        let mut bmp = vec![Cat::Other; 0x10000];
        for &(lo, hi, c) in &ranges {
            for x in lo..=hi.min(0xFFFF) {
                bmp[x as usize] = c;
            }
        }
        let astral = ranges.into_iter().filter(|r| r.1 > 0xFFFF).collect();
        Tables { bmp, astral }
    })
}

/// The code-point ranges (inclusive, sorted) of a regex class such as `\p{P}`,
/// from the Unicode tables in `regex-syntax`.
pub(crate) fn class_ranges(class: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::parse(class).expect("a Unicode class");
    let regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(u)) = hir.kind() else { unreachable!("{class} parses to a Unicode class") };
    u.ranges().iter().map(|r| (r.start() as u32, r.end() as u32)).collect()
}

/// Whether `c` lies in sorted, disjoint `ranges`.
pub(crate) fn in_ranges(ranges: &[(u32, u32)], c: char) -> bool {
    let x = c as u32;
    let i = ranges.partition_point(|r| r.1 < x);
    i < ranges.len() && ranges[i].0 <= x
}

fn cat(c: char) -> Cat {
    let x = c as u32;
    if x < 0x10000 {
        return tables().bmp[x as usize];
    }
    let a = &tables().astral;
    match a.partition_point(|r| r.1 < x) {
        i if i < a.len() && a[i].0 <= x => a[i].2,
        _ => Cat::Other,
    }
}

/// The character at byte `i` and its length; `i` is on a character boundary.
#[inline]
fn char_at(t: &str, i: usize) -> Option<(char, usize)> {
    let b = *t.as_bytes().get(i)?;
    if b < 0x80 {
        return Some((b as char, 1));
    }
    t[i..].chars().next().map(|c| (c, c.len_utf8()))
}

#[inline]
fn cat_at(t: &str, i: usize) -> Option<(Cat, usize)> {
    let b = *t.as_bytes().get(i)?;
    if b < 0x80 {
        return Some((ascii_cat(b), 1));
    }
    char_at(t, i).map(|(c, n)| (cat(c), n))
}

#[inline]
fn ascii_cat(b: u8) -> Cat {
    match b {
        b'a'..=b'z' | b'A'..=b'Z' => Cat::Letter,
        b'0'..=b'9' => Cat::Number,
        b'\t'..=b'\r' | b' ' => Cat::Space,
        _ => Cat::Other,
    }
}

/// The end of the longest run of `k`, from `i`, of at most `max` characters.
#[inline]
fn run(t: &str, mut i: usize, k: Cat, max: usize) -> usize {
    let mut n = 0;
    while n < max {
        match cat_at(t, i) {
            Some((c, len)) if c == k => {
                i += len;
                n += 1;
            }
            _ => break,
        }
    }
    i
}

/// Where `\s+(?!\S)|\s+` ends for the whitespace run at `i`: the run gives
/// back its last character when a non-space follows, unless that would leave
/// nothing.
fn whitespace_piece(t: &str, i: usize) -> usize {
    let end = run(t, i, Cat::Space, usize::MAX);
    if end == t.len() {
        return end;
    }
    let last = end - t[..end].chars().next_back().map_or(0, char::len_utf8);
    if last > i {
        last
    } else {
        end
    }
}

/// `'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
fn gpt2_piece(t: &str, i: usize) -> usize {
    let b = t.as_bytes();
    if b[i] == b'\'' {
        match (b.get(i + 1), b.get(i + 2)) {
            (Some(b's' | b'd' | b'm' | b't'), _) => return i + 2,
            (Some(b'l'), Some(b'l')) | (Some(b'v'), Some(b'e')) | (Some(b'r'), Some(b'e')) => return i + 3,
            _ => {}
        }
    }
    // ` ?X+` for X in letters, numbers, other: an optional space, then a run.
    let j = if b[i] == b' ' { i + 1 } else { i };
    if let Some((k, n)) = cat_at(t, j) {
        if k != Cat::Space {
            return run(t, j + n, k, usize::MAX);
        }
    }
    whitespace_piece(t, i)
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
fn cl100k_piece(t: &str, i: usize) -> usize {
    let b = t.as_bytes();
    let (c, n) = char_at(t, i).expect("i < len");
    if c == '\'' {
        if let Some(m) = cl100k_contraction(&t[i + 1..]) {
            return i + 1 + m;
        }
    }
    let k = if c.is_ascii() { ascii_cat(c as u8) } else { cat(c) };
    match k {
        Cat::Letter => return run(t, i + n, Cat::Letter, usize::MAX),
        Cat::Number => return run(t, i + n, Cat::Number, 2),
        _ => {}
    }
    // One character that is not a newline, letter or number, then letters.
    if c != '\r' && c != '\n' {
        if let Some((Cat::Letter, m)) = cat_at(t, i + n) {
            return run(t, i + n + m, Cat::Letter, usize::MAX);
        }
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let j = if c == ' ' { i + 1 } else { i };
    if let Some((Cat::Other, m)) = cat_at(t, j) {
        let mut e = run(t, j + m, Cat::Other, usize::MAX);
        while matches!(b.get(e), Some(b'\r' | b'\n')) {
            e += 1;
        }
        return e;
    }
    // `\s*[\r\n]+`: through the last newline of the whitespace run.
    let end = run(t, i, Cat::Space, usize::MAX);
    if let Some(p) = b[i..end].iter().rposition(|&x| x == b'\r' || x == b'\n') {
        return i + p + 1;
    }
    whitespace_piece(t, i)
}

/// Length of a case-insensitive `s|t|re|ve|m|ll|d` at the start of `t`.
fn cl100k_contraction(t: &str) -> Option<usize> {
    let mut it = t.chars();
    let first = it.next()?;
    let second = it.next();
    // Unicode simple case folding: 'ſ' (U+017F) folds to 's'.
    match first {
        's' | 'S' | 'ſ' | 't' | 'T' | 'm' | 'M' | 'd' | 'D' => Some(first.len_utf8()),
        'r' | 'R' | 'v' | 'V' if matches!(second, Some('e' | 'E')) => Some(2),
        'l' | 'L' if matches!(second, Some('l' | 'L')) => Some(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn pieces(s: &Splitter, t: &str) -> Vec<String> {
        let mut v = Vec::new();
        s.for_each_piece(t, |p| v.push(p.to_string()));
        v
    }

    /// Strings over the characters where a hand-written scanner could go
    /// wrong: every class boundary, both kinds of newline, Unicode spaces,
    /// letters and digits outside ASCII, apostrophes and contraction letters
    /// in both cases (with the long s that case-folds to 's').
    fn tricky(rng: &mut impl Rng, len: usize) -> String {
        const ALPHABET: &[&str] = &[
            " ", " ", "  ", "\n", "\r", "\r\n", "\t", "\u{a0}", "\u{3000}", "\u{2028}", "\u{85}", "'", "'", "s", "S", "ſ", "t", "T", "l", "L", "ll", "v", "e",
            "E", "r", "re", "ve", "m", "d", "D", "a", "Z", "é", "ß", "日本", "ж", "1", "23", "٣", "Ⅻ", "½", "𝟙", "𝐀", "!", "?", ".", "\"", "-", "🎉",
            "\u{300}", "_",
        ];
        (0..len).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())]).collect()
    }

    #[test]
    fn scanners_match_the_regex() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for (pattern, scanner) in [(GPT2_PATTERN, Splitter::Gpt2), (CL100K_PATTERN, Splitter::Cl100k)] {
            let re = Splitter::Regex(Box::new(fancy_regex::Regex::new(pattern).unwrap()));
            for round in 0..20_000 {
                let t = tricky(&mut rng, 1 + round % 24);
                assert_eq!(pieces(&scanner, &t), pieces(&re, &t), "pattern {pattern:?} on {t:?}");
            }
        }
    }

    #[test]
    fn chunks_keep_the_pieces_of_the_whole() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for scanner in [Splitter::Gpt2, Splitter::Cl100k] {
            for _ in 0..300 {
                let t: String = (0..40).map(|_| tricky(&mut rng, 6) + if rng.gen_bool(0.3) { "x\ny" } else { "" }).collect();
                let whole = pieces(&scanner, &t);
                for n in [2, 3, 8] {
                    let chunks = scanner.chunks(&t, n);
                    assert_eq!(chunks.concat(), t);
                    let joined: Vec<String> = chunks.iter().flat_map(|c| pieces(&scanner, c)).collect();
                    assert_eq!(joined, whole, "{t:?} in {n} chunks");
                }
            }
        }
    }

    #[test]
    fn unicode_classes_come_from_the_regex_tables() {
        assert_eq!(cat('é'), Cat::Letter);
        assert_eq!(cat('٣'), Cat::Number);
        assert_eq!(cat('\u{3000}'), Cat::Space);
        assert_eq!(cat('𝐀'), Cat::Letter);
        assert_eq!(cat('𝟙'), Cat::Number);
        assert_eq!(cat('🎉'), Cat::Other);
    }
}
