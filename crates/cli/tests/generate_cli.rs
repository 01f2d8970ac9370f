//! `attn generate` end to end on small runs.

mod common;

use common::{attn, copy_dir, corpus, stderr, tiny_run};

/// A tokenizer narrower than the model (here another run's, of 5 characters,
/// on a model of the corpus's ~35) cannot decode most of what the model
/// generates: generation goes on, as transformers' decode skips such ids, but
/// stderr says so once instead of printing a silently short answer.
#[test]
fn a_tokenizer_narrower_than_the_model_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (wide, narrow, mixed) = (root.join("wide"), root.join("narrow"), root.join("mixed"));
    let o = tiny_run(corpus(root).to_str().unwrap(), wide.to_str().unwrap(), "baby");
    assert!(o.status.success(), "{}", stderr(&o));
    let the = root.join("the.txt");
    std::fs::write(&the, "the the the\n".repeat(300)).unwrap();
    let o = tiny_run(the.to_str().unwrap(), narrow.to_str().unwrap(), "baby");
    assert!(o.status.success(), "{}", stderr(&o));
    copy_dir(&wide, &mixed);
    std::fs::copy(narrow.join("tokenizer.json"), mixed.join("tokenizer.json")).unwrap();
    let args = ["generate", "--model", mixed.to_str().unwrap(), "--prompt", "the", "--max-new-tokens", "48", "--temperature", "1.5", "--seed", "0"];
    let o = attn(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("cannot decode") && err.matches("note: the model generated").count() == 1, "{err}");
    // The model's own tokenizer decodes everything: no note.
    let o = attn(&["generate", "--model", wide.to_str().unwrap(), "--prompt", "the", "--max-new-tokens", "48", "--temperature", "1.5", "--seed", "0"]);
    assert!(o.status.success() && !stderr(&o).contains("cannot decode"), "{}", stderr(&o));
}
