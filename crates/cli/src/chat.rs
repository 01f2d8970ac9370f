//! `attn chat`: a multi-turn conversation through the model's chat template,
//! streamed; `--render` prints the prompt a template makes of a list of
//! messages.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use attn_generate::{generate, TextStream};
use attn_tokenizer::chat::{ChatTemplate, Message};
use clap::Args;

use crate::generate::SamplingArgs;

#[derive(Args)]
pub struct ChatArgs {
    /// A run folder or model folder; its chat template is tokenizer_config.json's
    /// `chat_template` or chat_template.jinja, else ChatML
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    weights: crate::WeightArgs,
    /// A system message that opens the conversation (kept across /reset)
    #[arg(long)]
    system: Option<String>,
    /// Read a JSON list of {"role", "content"} messages on standard input, print the prompt the
    /// template renders for it (with the assistant header, as add_generation_prompt=True) and exit
    #[arg(long)]
    render: bool,
    /// With --render: without the assistant header (add_generation_prompt=False)
    #[arg(long, requires = "render")]
    no_generation_prompt: bool,
    /// Most tokens in one reply [default: up to the end of the context]
    #[arg(long, allow_negative_numbers = true)]
    max_new_tokens: Option<usize>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Worker threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(a: ChatArgs) -> anyhow::Result<()> {
    let template = ChatTemplate::for_dir(&a.model)?;
    if a.render {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading the messages from standard input")?;
        let messages: Vec<serde_json::Value> =
            serde_json::from_str(&text).context("standard input: expected a JSON list of messages, e.g. [{\"role\": \"user\", \"content\": \"Hi\"}]")?;
        let prompt = template.render_json(&messages, !a.no_generation_prompt)?;
        return crate::print_or_quiet(&mut std::io::stdout().lock(), &prompt);
    }
    crate::set_threads(a.threads)?;
    let gen_cfg = crate::generation_config(&a.model)?;
    let mut sampler = a.sampling.sampler(&gen_cfg)?;
    let (mut model, tok) = a.weights.load(&a.model)?;
    // One sequence at a time: the layout its matrix-vector products read fastest.
    model.rows_for_decoding();
    // A character the template writes and the tokenizer lacks (ChatML's `<`
    // for a character-level model) would fail every turn: say so once.
    if let Some(ch) = template.unwritable_char(tok.as_ref()) {
        anyhow::bail!(
            "{}: the chat template writes {ch:?}, which the model's tokenizer does not know, so this model cannot chat; continue text with `attn generate --model {}` instead",
            a.model.display(),
            a.model.display()
        );
    }
    // A reply ends at the template's end-of-turn string, or an EOS token.
    let turn_ends = template.end_of_turn();
    let mut eos: Vec<u32> = model.config.eos_token_ids.clone();
    eos.extend(&gen_cfg.eos_token_ids);
    eos.extend(template.end_of_turn_ids(tok.as_ref()));
    let interactive = std::io::stdin().is_terminal();
    let opening: Vec<Message> = a.system.iter().map(|s| Message::new("system", s)).collect();
    let mut history = opening.clone();
    if interactive {
        eprintln!("chatting with {} ({}); /reset starts over, /exit or Ctrl-D ends", a.model.display(), model.describe());
    }
    let mut out = std::io::stdout().lock();
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading standard input")?;
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history = opening.clone();
                if interactive {
                    eprintln!("(new conversation)");
                }
                continue;
            }
            _ => {}
        }
        history.push(Message::new("user", &line));
        let Some(prompt) = fit_prompt(&template, tok.as_ref(), &mut history, opening.len(), model.context(), a.max_new_tokens)? else {
            eprintln!("error: this message alone does not leave room for a reply in the model's context of {} tokens", model.context());
            history.pop();
            continue;
        };
        let mut text = TextStream::new(turn_ends.clone());
        let (mut reply, mut io_err) = (String::new(), None);
        generate(&model, &prompt, a.max_new_tokens, false, &eos, &mut sampler, |id| {
            let (piece, stop) = text.push(&attn_generate::token_bytes(tok.as_ref(), id));
            reply.push_str(&piece);
            if let Err(e) = write!(out, "{piece}").and_then(|_| out.flush()) {
                io_err = Some(e);
                return false;
            }
            !stop
        })?;
        if let Some(e) = io_err {
            return crate::quiet_on_broken_pipe(e);
        }
        let tail = text.finish();
        reply.push_str(&tail);
        crate::print_or_quiet(&mut out, &tail)?;
        crate::print_or_quiet(&mut out, "\n")?;
        history.push(Message::new("assistant", &reply));
    }
    Ok(())
}

/// The prompt's ids for `history`, dropping the oldest turns after the
/// `keep` opening messages until the prompt leaves room for a reply
/// (`max_new` tokens, or at least one). None if even the last message alone
/// does not fit.
fn fit_prompt(
    template: &ChatTemplate,
    tok: &dyn attn_tokenizer::Tokenizer,
    history: &mut Vec<Message>,
    keep: usize,
    ctx: usize,
    max_new: Option<usize>,
) -> anyhow::Result<Option<Vec<u32>>> {
    let room = max_new.unwrap_or(1).max(1);
    loop {
        let ids = tok.encode_plain(&template.render(history, true)?)?;
        if ids.len() + room <= ctx {
            return Ok(Some(ids));
        }
        if history.len() <= keep + 1 {
            return Ok(None);
        }
        history.remove(keep);
        eprintln!("(the context is full: the oldest message was left out)");
    }
}
