//! `attn inspect` on a small trained run: every view in JSON (checked for
//! consistency), the pictures (checked to be real PNG/SVG files), and the
//! bad-input errors.

mod common;

use common::{attn, corpus, stderr, train_args};

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap()
}

#[test]
fn every_view_on_a_trained_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let mut args = train_args(data.to_str().unwrap(), run.to_str().unwrap(), "4");
    args.extend(["--tokenizer", "bpe:300"]);
    assert!(attn(&args).status.success());
    let m = run.to_str().unwrap();
    let text = "Line 12: the quick brown fox";

    // Attention as JSON: [layer][head][query][key], rows sum to 1, causal.
    let f = dir.path().join("att.json");
    let o = attn(&["inspect", "attention", "--model", m, "--text", text, "--out", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    let t = a["ids"].as_array().unwrap().len();
    assert_eq!(a["tokens"].as_array().unwrap().len(), t);
    assert_eq!(a["attention"].as_array().unwrap().len(), 4, "baby has 4 layers");
    for row in 0..t {
        let r: Vec<f64> = a["attention"][3][1][row].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-5);
        assert!(r[row + 1..].iter().all(|&x| x == 0.0));
    }
    // Pictures: the grid and one head, PNG and SVG.
    for (name, extra) in [("grid.png", vec![]), ("head.svg", vec!["--layer", "1", "--head", "2"]), ("head.png", vec!["--layer", "0", "--head", "0"])] {
        let p = dir.path().join(name);
        let mut args = vec!["inspect", "attention", "--model", m, "--text", text, "--out", p.to_str().unwrap()];
        args.extend(extra);
        let o = attn(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let bytes = std::fs::read(&p).unwrap();
        if name.ends_with("png") {
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        } else {
            assert!(String::from_utf8_lossy(&bytes).contains("<svg"));
        }
    }
    // The terminal heatmap prints one row per token.
    let o = attn(&["inspect", "attention", "--model", m, "--text", text, "--layer", "0", "--head", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), t + 3);

    // Next token: probabilities before filters sum to at most 1 and are sorted;
    // top-k 2 keeps exactly two tokens.
    let n = json(&attn(&["inspect", "next", "--model", m, "--text", text, "--top", "5", "--top-k", "2", "--json"]));
    let c = n["candidates"].as_array().unwrap();
    assert_eq!(c.len(), 5);
    let probs: Vec<f64> = c.iter().map(|x| x["prob"].as_f64().unwrap()).collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]));
    let kept: Vec<f64> = c.iter().map(|x| x["filtered_prob"].as_f64().unwrap()).collect();
    assert!(kept[2..].iter().all(|&x| x == 0.0) && (kept[0] + kept[1] - 1.0).abs() < 1e-5);
    assert!(n["entropy"].as_f64().unwrap() > n["filtered_entropy"].as_f64().unwrap());

    // Logit lens: the last layer's top guess at the last position is the top next token.
    let l = json(&attn(&["inspect", "lens", "--model", m, "--text", text, "--json"]));
    let layers = l["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 5, "embeddings + 4 blocks");
    assert_eq!(layers[4]["positions"][t - 1][0]["id"], c[0]["id"]);

    // Embeddings: a symmetric cosine matrix with ones on the diagonal, and a PCA plot.
    let p = dir.path().join("pca.png");
    let e = json(&attn(&["inspect", "embeddings", "--model", m, "--words", "the,fox,dog,quick", "--out", p.to_str().unwrap(), "--json"]));
    let cos = e["cosine"].as_array().unwrap();
    for (i, row) in cos.iter().enumerate() {
        assert!((row[i].as_f64().unwrap() - 1.0).abs() < 1e-9);
        for (j, x) in row.as_array().unwrap().iter().enumerate() {
            assert!((x.as_f64().unwrap() - cos[j][i].as_f64().unwrap()).abs() < 1e-12);
        }
    }
    assert_eq!(e["nearest"][0].as_array().unwrap().len(), 5);
    assert!(std::fs::read(&p).unwrap().starts_with(b"\x89PNG"));
    let p3 = dir.path().join("pca3.svg");
    let e3 = json(&attn(&["inspect", "embeddings", "--model", m, "--words", "the,fox,dog,quick", "--three-d", "--out", p3.to_str().unwrap(), "--json"]));
    assert_eq!(e3["pca"][0].as_array().unwrap().len(), 3);
    assert!(std::fs::read_to_string(&p3).unwrap().contains("PC3"));

    // Tokens: the pieces concatenate to the text.
    let k = json(&attn(&["inspect", "tokens", "--model", m, "--text", text, "--json"]));
    let joined: String = k["tokens"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(joined, text);

    // Bad input: a head that does not exist, a text longer than the context, an unknown picture type.
    let o = attn(&["inspect", "attention", "--model", m, "--text", text, "--layer", "9", "--head", "0"]);
    assert!(!o.status.success() && stderr(&o).contains("--layer 9"), "{}", stderr(&o));
    let long = "the quick brown fox ".repeat(40);
    let o = attn(&["inspect", "next", "--model", m, "--text", &long]);
    assert!(!o.status.success() && stderr(&o).contains("context"), "{}", stderr(&o));
    let o = attn(&["inspect", "attention", "--model", m, "--text", text, "--out", dir.path().join("x.bmpx").to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains(".png"), "{}", stderr(&o));
}
