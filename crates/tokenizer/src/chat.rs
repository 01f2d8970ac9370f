//! Chat templates: a conversation (a list of role and content messages)
//! rendered into the one string a chat model was trained on.
//!
//! A Hugging Face folder keeps its template as Jinja source, in
//! `tokenizer_config.json`'s `chat_template` or in `chat_template.jinja`.
//! It is rendered here with minijinja set up as transformers sets up Jinja2
//! for `apply_chat_template`: blocks trimmed and left-stripped, Python's
//! string and dict methods (`.strip()`, `.startswith()`, `.items()`, ...),
//! `raise_exception(msg)` that fails the render with the template's own
//! message, `tojson` as Python's `json.dumps`, and the variables `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token`, `pad_token`,
//! `unk_token`. Folders without a template, and attn's own models, get
//! ChatML.

use std::path::{Path, PathBuf};

use minijinja::value::{Kwargs, Serde, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{Result, TokenizerError};

/// attn's default template: ChatML, with no system turn added.
pub const CHATML: &str = include_str!("chatml.jinja");

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// "system", "user" or "assistant".
    pub role: String,
    /// What was said.
    pub content: String,
}

impl Message {
    /// A turn of `role` saying `content`.
    pub fn new(role: &str, content: &str) -> Self {
        Message { role: role.into(), content: content.into() }
    }
}

/// A compiled chat template and the special-token strings it may use.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Where the template came from, for error messages.
    origin: PathBuf,
    /// The template's Jinja text.
    pub source: String,
    /// The strings the template may write as `bos_token`, `eos_token`,
    /// `pad_token` and `unk_token` (tokenizer_config.json's).
    pub bos_token: Option<String>,
    #[allow(missing_docs)]
    pub eos_token: Option<String>,
    #[allow(missing_docs)]
    pub pad_token: Option<String>,
    #[allow(missing_docs)]
    pub unk_token: Option<String>,
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error names `origin` and the line.
    pub fn new(source: &str, origin: &Path) -> Result<Self> {
        let mut env = Environment::new();
        // What transformers' Jinja2 environment does.
        let syntax = minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().expect("a valid syntax");
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, format!("{RAISED}{msg}")))
        });
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string()).map_err(|e| template_error(origin, &e))?;
        Ok(ChatTemplate { env, origin: origin.to_path_buf(), source: source.to_string(), bos_token: None, eos_token: None, pad_token: None, unk_token: None })
    }

    /// attn's ChatML.
    pub fn chatml() -> Self {
        let mut t = Self::new(CHATML, Path::new("attn's ChatML template")).expect("the built-in template compiles");
        t.eos_token = Some("<|im_end|>".into());
        t
    }

    /// The template of a model folder: `chat_template.jinja`, else
    /// `tokenizer_config.json`'s `chat_template` (a string, or a list of
    /// named templates of which "default" is taken). None when the folder
    /// has neither. The special-token strings come from
    /// `tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = match std::fs::read_to_string(&cfg_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| fmt_err(&cfg_path, format!("invalid JSON: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Value::Null,
            Err(err) => return Err(TokenizerError::Io { path: cfg_path, err }),
        };
        let jinja = dir.join("chat_template.jinja");
        let (source, origin) = if jinja.exists() {
            (std::fs::read_to_string(&jinja).map_err(|err| TokenizerError::Io { path: jinja.clone(), err })?, jinja)
        } else {
            match &cfg["chat_template"] {
                serde_json::Value::Null => return Ok(None),
                serde_json::Value::String(s) => (s.clone(), cfg_path.clone()),
                serde_json::Value::Array(named) => {
                    let pick = named.iter().find(|t| t["name"] == "default").or(named.first());
                    match pick.and_then(|t| t["template"].as_str()) {
                        Some(s) => (s.to_string(), cfg_path.clone()),
                        None => return Err(fmt_err(&cfg_path, "field chat_template: a list without a {\"name\", \"template\"} entry".into())),
                    }
                }
                _ => return Err(fmt_err(&cfg_path, "field chat_template: expected a string (Jinja source) or a list of named templates".into())),
            }
        };
        let mut t = Self::new(&source, &origin)?;
        let special = |key: &str| match &cfg[key] {
            serde_json::Value::String(s) => Some(s.clone()),
            // An AddedToken written out: {"content": "<s>", ...}.
            serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
            _ => None,
        };
        t.bos_token = special("bos_token");
        t.eos_token = special("eos_token");
        t.pad_token = special("pad_token");
        t.unk_token = special("unk_token");
        Ok(Some(t))
    }

    /// The folder's template, or ChatML.
    pub fn for_dir(dir: &Path) -> Result<Self> {
        Ok(Self::from_dir(dir)?.unwrap_or_else(Self::chatml))
    }

    /// The prompt for `messages`, exactly as transformers'
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_value(Value::from(Serde(messages)), add_generation_prompt)
    }

    /// As `render`, for messages given as JSON objects, whatever fields they
    /// carry beyond `role` and `content` (names, tool calls, content parts).
    pub fn render_json(&self, messages: &[serde_json::Value], add_generation_prompt: bool) -> Result<String> {
        self.render_value(Value::from(Serde(messages)), add_generation_prompt)
    }

    fn render_value(&self, messages: Value, add_generation_prompt: bool) -> Result<String> {
        let tmpl = self.env.get_template("chat").expect("added in new");
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
            pad_token => self.pad_token.clone(),
            unk_token => self.unk_token.clone(),
        };
        tmpl.render(ctx).map_err(|e| template_error(&self.origin, &e))
    }

    /// A character the template itself writes (around an empty user turn)
    /// that `tok` cannot encode: ChatML's `<` for a character-level
    /// tokenizer. Such a model cannot chat or learn to, whatever the
    /// messages say.
    pub fn unwritable_char(&self, tok: &dyn crate::Tokenizer) -> Option<char> {
        let text = self.render(&[Message::new("user", "")], true).ok()?;
        match tok.encode_plain(&text) {
            Err(crate::TokenizerError::UnknownChar { ch, .. }) => Some(ch),
            _ => None,
        }
    }

    /// Strings that end an assistant turn in this template's format, most
    /// specific first: `<|im_end|>` (ChatML), `<|eot_id|>` (Llama 3),
    /// `<|end|>`, then the EOS token. Generation stops at any of them.
    pub fn end_of_turn(&self) -> Vec<String> {
        let mut out: Vec<String> =
            ["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"].iter().filter(|s| self.source.contains(*s)).map(|s| s.to_string()).collect();
        if let Some(e) = self.eos_token.as_ref().filter(|e| !e.is_empty() && !out.contains(e)) {
            out.push(e.clone());
        }
        out
    }

    /// The end-of-turn strings that `tok` encodes as one token: generation
    /// stops on those ids as well as on the text.
    pub fn end_of_turn_ids(&self, tok: &dyn crate::Tokenizer) -> Vec<u32> {
        self.end_of_turn().iter().filter_map(|s| tok.encode_plain(s).ok().filter(|ids| ids.len() == 1).map(|ids| ids[0])).collect()
    }

    /// Writes the template into `dir/tokenizer_config.json` (merging with
    /// what is there), with the EOS token, so transformers and attn both
    /// find it.
    pub fn save_to_dir(&self, dir: &Path) -> Result<()> {
        let path = dir.join("tokenizer_config.json");
        let mut cfg: serde_json::Value = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(serde_json::json!({}));
        if !cfg.is_object() {
            cfg = serde_json::json!({});
        }
        cfg["chat_template"] = self.source.clone().into();
        for (key, v) in [("bos_token", &self.bos_token), ("eos_token", &self.eos_token), ("pad_token", &self.pad_token)] {
            if let Some(v) = v {
                cfg[key] = v.clone().into();
            }
        }
        let text = serde_json::to_string_pretty(&cfg).expect("serializes");
        crate::write_atomic(&path, &text)
    }
}

/// Marks the errors the template raised itself.
const RAISED: &str = "raise_exception: ";

fn fmt_err(path: &Path, msg: String) -> TokenizerError {
    TokenizerError::Format { path: path.to_path_buf(), msg }
}

/// minijinja's error with its line, and for `raise_exception` the template's own message.
fn template_error(origin: &Path, e: &Error) -> TokenizerError {
    let mut msg = match e.detail().and_then(|d| d.strip_prefix(RAISED)) {
        Some(own) => format!("the chat template refused the conversation: {own}"),
        None => format!("chat template: {e}"),
    };
    if let Some(line) = e.line() {
        msg.push_str(&format!(" (template line {line})"));
    }
    fmt_err(origin, msg)
}

/// Python's `json.dumps(value, ensure_ascii=False)` as transformers' `tojson`
/// filter writes it: ", " and ": " separators, keys in insertion order, no
/// HTML escaping; `indent` as in Python.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, &value, indent, 0)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(out: &mut String, v: &Value, indent: Option<usize>, depth: usize) -> std::result::Result<(), Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&v.to_string()),
        ValueKind::String => out.push_str(&serde_json::to_string(v.as_str().unwrap_or_default()).expect("a string serializes")),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in v.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                write_json(out, &item, indent, depth + 1)?;
            }
            if v.len().unwrap_or(0) > 0 {
                newline(out, depth);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in v.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                write_json(out, &Value::from(key.to_string()), indent, depth + 1)?;
                out.push_str(": ");
                write_json(out, &v.get_item(&key)?, indent, depth + 1)?;
            }
            if v.len().unwrap_or(0) > 0 {
                newline(out, depth);
            }
            out.push('}');
        }
        _ => return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson: cannot write a {} as JSON", v.kind()))),
    }
    Ok(())
}
