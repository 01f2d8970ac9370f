//! The README's command-line summary and `--help` agree: every flag the
//! README shows exists, every flag `--help` lists is in the README, and
//! every flag has help text.

mod common;

use std::collections::BTreeSet;

use common::attn;

fn flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(p) = text[i..].find("--") {
        let start = i + p;
        let mut end = start + 2;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end].is_ascii_digit() || bytes[end] == b'-') {
            end += 1;
        }
        // "--" alone, or preceded by a word character (not a flag).
        let standalone = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric());
        if end > start + 2 && standalone {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out.remove("--help");
    out.remove("--version");
    out
}

/// The README's usage lines, joined per subcommand ("attn inspect next" ...).
fn readme_usage() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let start = readme.find("## The command line").expect("README has the command-line section");
    let block = &readme[start..];
    let block = &block[block.find("```text").unwrap() + 7..];
    let block = &block[..block.find("```").unwrap()];
    let mut cmds: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        let line = line.split("  # ").next().unwrap();
        if let Some(rest) = line.strip_prefix("attn ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let two = matches!(words[0], "tokenizer" | "inspect" | "bench" | "lora");
            let name = if two { format!("{} {}", words[0], words[1]) } else { words[0].to_string() };
            cmds.push((name, line.to_string()));
        } else if let Some(last) = cmds.last_mut() {
            last.1.push_str(line);
        }
    }
    cmds
}

#[test]
fn readme_and_help_list_the_same_flags_and_every_flag_has_help() {
    let cmds = readme_usage();
    assert!(cmds.len() >= 20, "{} usage lines found", cmds.len());
    let mut problems = Vec::new();
    for (name, usage) in &cmds {
        let args: Vec<&str> = name.split(' ').chain(["--help"]).collect();
        let o = attn(&args);
        assert!(o.status.success(), "attn {name} --help failed");
        let help = String::from_utf8_lossy(&o.stdout).into_owned();
        let options = &help[help.find("Options:").unwrap_or(0)..];
        let (in_readme, in_help) = (flags(usage), flags(options));
        for f in in_readme.difference(&in_help) {
            problems.push(format!("attn {name}: README shows {f}, --help does not"));
        }
        for f in in_help.difference(&in_readme) {
            problems.push(format!("attn {name}: --help lists {f}, the README does not"));
        }
        // A flag line with nothing after it and no indented description below.
        let lines: Vec<&str> = options.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim();
            if t.starts_with("--") || t.starts_with("-h") {
                let after_flag = t.split_once("  ").map_or("", |(_, d)| d.trim());
                let below = lines.get(i + 1).is_some_and(|n| n.starts_with("          ") && !n.trim().starts_with('-'));
                if after_flag.is_empty() && !below && !t.starts_with("-h") {
                    problems.push(format!("attn {name}: {t} has no help text"));
                }
            }
        }
    }
    // Every subcommand has a README line.
    let o = attn(&["--help"]);
    let top = String::from_utf8_lossy(&o.stdout).into_owned();
    for line in top[top.find("Commands:").unwrap()..].lines().skip(1) {
        let Some(cmd) = line.split_whitespace().next() else { break };
        if cmd == "help" || cmd == "Options:" {
            break;
        }
        if cmd != "completions" && !cmds.iter().any(|(n, _)| n == cmd || n.starts_with(&format!("{cmd} "))) {
            problems.push(format!("attn {cmd} is not in the README's command-line summary"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
