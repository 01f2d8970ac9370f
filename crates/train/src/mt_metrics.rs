//! Translation metrics computed as sacreBLEU 2.x computes its defaults:
//! corpus BLEU with the 13a tokenizer, exponential smoothing and one
//! reference per segment; chrF with character n-grams up to 6, beta 2,
//! whitespace removed, no word n-grams. Checked against PyPI `sacrebleu`
//! (tools/reference/mt_metrics_golden.py).

use std::collections::HashMap;

/// The "13a" tokenizer of mteval-v13a.pl: unescape a few entities, split
/// off punctuation and symbols, periods and commas unless next to a digit,
/// and dashes after a digit.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        line = line.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    }
    let chars: Vec<char> = format!(" {line} ").chars().collect();
    // Symbols: { | } ~ [ \ ] ^ _ ` space ! " # $ % & ( ) * + : ; < = > ? @ /
    let symbol = |c: char| matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/');
    let mut a = Vec::with_capacity(chars.len() * 2);
    for c in chars {
        if symbol(c) {
            a.extend([' ', c, ' ']);
        } else {
            a.push(c);
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let punct = |c: char| c == '.' || c == ',';
    // Each rule is one left-to-right pass of non-overlapping two-character
    // matches, as Python's re.sub makes it.
    let pass = |s: &[char], hit: &dyn Fn(char, char) -> bool, out: &dyn Fn(char, char, &mut Vec<char>)| {
        let mut r = Vec::with_capacity(s.len() * 2);
        let mut i = 0;
        while i < s.len() {
            if i + 1 < s.len() && hit(s[i], s[i + 1]) {
                out(s[i], s[i + 1], &mut r);
                i += 2;
            } else {
                r.push(s[i]);
                i += 1;
            }
        }
        r
    };
    let b = pass(&a, &|x, y| !digit(x) && punct(y), &|x, y, r| r.extend([x, ' ', y, ' ']));
    let c = pass(&b, &|x, y| punct(x) && !digit(y), &|x, y, r| r.extend([' ', x, ' ', y]));
    let d = pass(&c, &|x, y| digit(x) && y == '-', &|x, y, r| r.extend([x, ' ', y, ' ']));
    let s: String = d.into_iter().collect();
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn ngrams<T: Clone + Eq + std::hash::Hash>(items: &[T], n: usize) -> HashMap<&[T], usize> {
    let mut m = HashMap::new();
    if items.len() >= n {
        for w in items.windows(n) {
            *m.entry(w).or_insert(0) += 1;
        }
    }
    m
}

/// Clipped matches and hypothesis n-gram counts of one order.
fn matches<T: Clone + Eq + std::hash::Hash>(hyp: &[T], reference: &[T], n: usize) -> (usize, usize, usize) {
    let (h, r) = (ngrams(hyp, n), ngrams(reference, n));
    let hit = h.iter().map(|(g, &c)| c.min(r.get(g).copied().unwrap_or(0))).sum();
    (hit, h.values().sum(), r.values().sum())
}

/// Corpus BLEU (0-100) of `hyps` against one reference each.
pub fn corpus_bleu(hyps: &[String], refs: &[String]) -> f64 {
    assert_eq!(hyps.len(), refs.len(), "one reference per hypothesis");
    let (mut correct, mut total) = ([0usize; 4], [0usize; 4]);
    let (mut sys_len, mut ref_len) = (0usize, 0usize);
    for (h, r) in hyps.iter().zip(refs) {
        let ht = tokenize_13a(h.trim_end());
        let rt = tokenize_13a(r.trim_end());
        let (hw, rw): (Vec<&str>, Vec<&str>) = (ht.split(' ').filter(|w| !w.is_empty()).collect(), rt.split(' ').filter(|w| !w.is_empty()).collect());
        sys_len += hw.len();
        ref_len += rw.len();
        for n in 1..=4 {
            let (hit, count, _) = matches(&hw, &rw, n);
            correct[n - 1] += hit;
            total[n - 1] += count;
        }
    }
    let bp = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    if correct.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let mut precisions = [0.0f64; 4];
    let mut smooth = 1.0f64;
    for n in 0..4 {
        if total[n] == 0 {
            break;
        }
        precisions[n] = if correct[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
    }
    let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
    bp * (precisions.iter().map(|&p| log(p)).sum::<f64>() / 4.0).exp()
}

/// Corpus chrF (0-100): character n-grams of orders 1-6, beta 2.
pub fn corpus_chrf(hyps: &[String], refs: &[String]) -> f64 {
    assert_eq!(hyps.len(), refs.len(), "one reference per hypothesis");
    const ORDER: usize = 6;
    // Per order: hypothesis n-grams, reference n-grams, matches.
    let mut stats = [[0usize; 3]; ORDER];
    for (h, r) in hyps.iter().zip(refs) {
        let hc: Vec<char> = h.split_whitespace().collect::<String>().chars().collect();
        let rc: Vec<char> = r.split_whitespace().collect::<String>().chars().collect();
        for n in 1..=ORDER {
            let (hit, hn, rn) = matches(&hc, &rc, n);
            stats[n - 1][0] += hn;
            stats[n - 1][1] += rn;
            stats[n - 1][2] += hit;
        }
    }
    let beta2 = 4.0;
    let (mut prec, mut rec, mut order) = (0.0f64, 0.0f64, 0usize);
    for [nh, nr, m] in stats {
        if nh > 0 && nr > 0 {
            prec += m as f64 / nh as f64;
            rec += m as f64 / nr as f64;
            order += 1;
        }
    }
    if order == 0 {
        return 0.0;
    }
    (prec, rec) = (prec / order as f64, rec / order as f64);
    if prec + rec == 0.0 {
        return 0.0;
    }
    100.0 * (1.0 + beta2) * prec * rec / (beta2 * prec + rec)
}
