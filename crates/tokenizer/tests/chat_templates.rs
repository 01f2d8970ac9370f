//! Chat templates rendered as transformers 5.x's `apply_chat_template`
//! renders them (testdata/chat_templates.json, written by
//! tools/reference/chat_template_golden.py): Llama 3 headers, Qwen2's ChatML
//! with a default system turn, Zephyr, [INST] with strict alternation, and
//! attn's ChatML; a conversation a template refuses fails with the
//! template's own message.

use std::path::{Path, PathBuf};

use attn_tokenizer::chat::{ChatTemplate, Message};

fn fixture() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/chat_templates.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn template(f: &serde_json::Value, name: &str) -> ChatTemplate {
    let t = &f["templates"][name];
    let mut tmpl = ChatTemplate::new(t["source"].as_str().unwrap(), Path::new(name)).unwrap();
    tmpl.bos_token = t["bos_token"].as_str().map(str::to_string);
    tmpl.eos_token = t["eos_token"].as_str().map(str::to_string);
    tmpl
}

#[test]
fn renders_exactly_as_transformers() {
    let f = fixture();
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 50);
    let (mut rendered, mut refused) = (0, 0);
    for (i, c) in cases.iter().enumerate() {
        let name = c["template"].as_str().unwrap();
        let tmpl = template(&f, name);
        let messages: Vec<Message> = serde_json::from_value(c["messages"].clone()).unwrap();
        let gen = c["add_generation_prompt"].as_bool().unwrap();
        match (tmpl.render(&messages, gen), c.get("rendered")) {
            (Ok(ours), Some(theirs)) => {
                assert_eq!(ours, theirs.as_str().unwrap(), "case {i} ({name}, add_generation_prompt {gen})");
                rendered += 1;
            }
            (Err(e), None) => {
                let want = c["error"].as_str().unwrap();
                assert!(e.to_string().contains(want), "case {i} ({name}): error {e} should carry the template's message {want:?}");
                refused += 1;
            }
            (Ok(ours), None) => panic!("case {i} ({name}): rendered {ours:?} where transformers refused: {}", c["error"]),
            (Err(e), Some(_)) => panic!("case {i} ({name}): {e}"),
        }
    }
    eprintln!("{rendered} renderings identical to transformers {}, {refused} refusals", f["transformers"]);
    assert!(refused >= 1);
}

#[test]
fn the_builtin_chatml_is_the_fixture_template() {
    let f = fixture();
    assert_eq!(ChatTemplate::chatml().source, f["templates"]["chatml"]["source"].as_str().unwrap());
}

#[test]
fn folder_templates_load_from_either_file() {
    let dir = tempfile::tempdir().unwrap();
    assert!(ChatTemplate::from_dir(dir.path()).unwrap().is_none());
    let src = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}";
    std::fs::write(dir.path().join("tokenizer_config.json"), serde_json::json!({"chat_template": src, "eos_token": {"content": "</s>"}}).to_string()).unwrap();
    let t = ChatTemplate::from_dir(dir.path()).unwrap().unwrap();
    assert_eq!(t.render(&[Message::new("user", "hi")], false).unwrap(), "[user]hi</s>");
    assert_eq!(t.end_of_turn(), vec!["</s>".to_string()]);
    // chat_template.jinja wins, as in transformers 4.43 and later.
    std::fs::write(dir.path().join("chat_template.jinja"), "{{ messages | length }}").unwrap();
    assert_eq!(ChatTemplate::from_dir(dir.path()).unwrap().unwrap().render(&[Message::new("user", "hi")], false).unwrap(), "1");
    // Saving writes the template where transformers reads it.
    let out = tempfile::tempdir().unwrap();
    ChatTemplate::chatml().save_to_dir(out.path()).unwrap();
    let saved = ChatTemplate::from_dir(out.path()).unwrap().unwrap();
    assert_eq!(saved.source, attn_tokenizer::chat::CHATML);
    assert_eq!(saved.end_of_turn(), vec!["<|im_end|>".to_string()]);
}

#[test]
fn errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chat_template.jinja"), "ok\n{% for m in messages %}{{ m.content }\n").unwrap();
    let e = ChatTemplate::from_dir(dir.path()).err().expect("a syntax error").to_string();
    assert!(e.contains("chat_template.jinja") && e.contains("line 2"), "{e}");
    std::fs::write(dir.path().join("tokenizer_config.json"), r#"{"chat_template": 7}"#).unwrap();
    std::fs::remove_file(dir.path().join("chat_template.jinja")).unwrap();
    let e = ChatTemplate::from_dir(dir.path()).err().expect("a bad field").to_string();
    assert!(e.contains("tokenizer_config.json") && e.contains("chat_template"), "{e}");
}

#[test]
fn tojson_writes_python_json() {
    let t = ChatTemplate::new("{{ messages[0] | tojson }}|{{ {'a': [1, 2], 'b': 'é<'} | tojson(indent=2) }}", Path::new("t")).unwrap();
    let out = t.render(&[Message::new("user", "x\"y")], false).unwrap();
    assert_eq!(out, "{\"role\": \"user\", \"content\": \"x\\\"y\"}|{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": \"é<\"\n}");
}
