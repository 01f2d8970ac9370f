//! Classification end to end: `attn train --task classify --init LM` puts a
//! head on a small language model and learns a synthetic two-label task
//! from JSONL (or CSV), `attn eval` scores it (accuracy, macro F1, confusion
//! matrix and its picture), `attn classify` labels texts; bad records and
//! misuse are refused by name.

mod common;

use std::path::Path;

use common::{attn, corpus, stderr, train_args};

/// Texts that mention "red" or "blue", labelled by which.
fn colours(dir: &Path) -> (String, String) {
    let words = ["the", "fox", "runs", "over", "a", "dog", "and", "then", "sleeps", "quick"];
    let (mut jsonl, mut csv) = (String::new(), String::from("text,label\n"));
    for i in 0..240 {
        let colour = if i % 2 == 0 { "red" } else { "blue" };
        let mut w: Vec<&str> = (0..6).map(|k| words[(i * 7 + k * 3) % 10]).collect();
        w.insert(i % 5, colour);
        let text = w.join(" ");
        jsonl.push_str(&serde_json::json!({"text": text, "label": colour}).to_string());
        jsonl.push('\n');
        csv.push_str(&format!("{text},{colour}\n"));
    }
    let (j, c) = (dir.join("colours.jsonl"), dir.join("colours.csv"));
    std::fs::write(&j, jsonl).unwrap();
    std::fs::write(&c, csv).unwrap();
    (j.to_string_lossy().into_owned(), c.to_string_lossy().into_owned())
}

#[test]
fn classifier_trains_evaluates_and_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let text = corpus(tmp.path());
    let base = tmp.path().join("base");
    let o = attn(&train_args(text.to_str().unwrap(), base.to_str().unwrap(), "4"));
    assert!(o.status.success(), "{}", stderr(&o));
    let (jsonl, csv) = colours(tmp.path());
    let out = tmp.path().join("cls");
    let o = attn(&[
        "train",
        "--task",
        "classify",
        "--data",
        &jsonl,
        "--init",
        base.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--lr",
        "3e-3",
        "--warmup",
        "5",
        "--eval-every",
        "20",
        "--threads",
        "2",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // 216 training texts (10% held out), 16 a step, 3 epochs.
    assert_eq!(summary["step"], 41, "{summary}");
    assert!(summary["val_accuracy"].as_f64().unwrap() >= 0.9, "{summary}");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "GPT2ForSequenceClassification");
    assert_eq!(cfg["id2label"], serde_json::json!({"0": "blue", "1": "red"}));

    let m = out.to_str().unwrap();
    let png = tmp.path().join("cm.png");
    let o = attn(&["eval", "--model", m, "--data", &csv, "--json", "--out", png.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(e["accuracy"].as_f64().unwrap() >= 0.9 && e["macro_f1"].as_f64().unwrap() >= 0.9, "{e}");
    assert_eq!(e["labels"], serde_json::json!(["blue", "red"]));
    let conf: Vec<Vec<u64>> = serde_json::from_value(e["confusion"].clone()).unwrap();
    assert_eq!(conf.iter().flatten().sum::<u64>(), 240);
    // A classifier has no KV cache to shrink: said, not ignored.
    let o = attn(&["eval", "--model", m, "--data", &csv, "--kv-dtype", "bf16"]);
    assert!(!o.status.success() && stderr(&o).contains("applies to decoders"), "{}", stderr(&o));
    assert!(std::fs::metadata(&png).unwrap().len() > 1000, "no confusion-matrix picture");

    // The first two texts of the set: red, then blue.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl).unwrap().lines().take(2).map(|l| serde_json::from_str(l).unwrap()).collect();
    let (red, blue) = (lines[0]["text"].as_str().unwrap(), lines[1]["text"].as_str().unwrap());
    let o = attn(&["classify", "--model", m, "--json", red, blue]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let res = r["results"].as_array().unwrap();
    assert_eq!((res[0]["label"].as_str(), res[1]["label"].as_str()), (Some("red"), Some("blue")), "{r}");
    let p = &res[0]["probs"];
    assert!((p["red"].as_f64().unwrap() + p["blue"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    assert_eq!(res[0]["logits"].as_array().unwrap().len(), 2);
    let o = attn(&["classify", "--model", m, "--data", &jsonl]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).lines().count() == 240, "{}", stderr(&o));

    // LoRA: adapters on the body, the head trained in full (PEFT's SEQ_CLS);
    // the run is an adapter folder that classifies, resumes bit for bit.
    let lora = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--task",
            "classify",
            "--data",
            &jsonl,
            "--init",
            base.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "30",
            "--batch-size",
            "16",
            "--lr",
            "1e-2",
            "--warmup",
            "3",
            "--eval-every",
            "10",
            "--threads",
            "2",
            "--quiet",
            "--lora-r",
            "8",
            "--lora-targets",
            "q,v,o,mlp",
        ];
        args.extend_from_slice(extra);
        attn(&args)
    };
    let (lfull, lpart) = (tmp.path().join("lora-full"), tmp.path().join("lora-part"));
    let o = lora(&lfull, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(s["val_accuracy"].as_f64().unwrap() >= 0.75, "{s}");
    assert!(!lfull.join("model.safetensors").exists() && lfull.join("adapter_model.safetensors").exists());
    let acfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(lfull.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((acfg["task_type"].as_str(), acfg["modules_to_save"][1].as_str()), (Some("SEQ_CLS"), Some("score")));
    let o = lora(&lpart, &["--halt-at", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lora(&lpart, &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bits = |d: &Path| {
        std::fs::read(d.join("adapter_model.safetensors"))
            .map(|_| {
                let f = attn_model::checkpoint::TensorFile::open(&d.join("adapter_model.safetensors")).unwrap();
                let mut n: Vec<String> = f.names().map(str::to_string).collect();
                n.sort();
                n.iter().map(|k| f.read_f32(k).unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>()).collect::<Vec<_>>()
            })
            .unwrap()
    };
    assert!(bits(&lpart) == bits(&lfull), "LoRA classifier resume is not bit for bit");
    let o = attn(&["eval", "--model", lfull.to_str().unwrap(), "--data", &csv, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((e["accuracy"].as_f64().unwrap() - 0.0).abs() > 0.0 && e["count"] == 240, "{e}");
    let o = attn(&["classify", "--model", lfull.to_str().unwrap(), red]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Misuse is named.
    let o = attn(&["classify", "--model", base.to_str().unwrap(), "hello"]);
    assert!(!o.status.success() && stderr(&o).contains("not a classifier"), "{}", stderr(&o));
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"x\", \"label\": [1]}\n").unwrap();
    let o = attn(&[
        "train",
        "--task",
        "classify",
        "--data",
        bad.to_str().unwrap(),
        "--init",
        base.to_str().unwrap(),
        "--out",
        tmp.path().join("b").to_str().unwrap(),
    ]);
    assert!(!o.status.success() && stderr(&o).contains("bad.jsonl:1") && stderr(&o).contains("\"label\""), "{}", stderr(&o));
    let o = attn(&["train", "--task", "classify", "--data", &jsonl, "--out", tmp.path().join("c").to_str().unwrap(), "--steps", "1"]);
    assert!(!o.status.success() && stderr(&o).contains("--init"), "{}", stderr(&o));
}
