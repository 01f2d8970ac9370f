//! `attn serve`: the OpenAI-compatible server (crates/serve).

use std::path::PathBuf;
use std::sync::Arc;

use attn_serve::{ChatModel, Embedder, Loaded, ServeOptions};
use clap::Args;

#[derive(Args)]
pub struct ServeArgs {
    /// A run folder or model folder with a decoder (GPT-2, Llama, Qwen2, Mistral)
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    weights: crate::WeightArgs,
    /// A BERT / sentence-transformers folder for POST /v1/embeddings (e.g. all-MiniLM-L6-v2)
    #[arg(long)]
    embedding_model: Option<PathBuf>,
    /// Address to listen on; 0.0.0.0 makes the server reachable from other machines
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one (printed at start)
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Sequences generated together, each with its own KV cache (continuous batching)
    #[arg(long, default_value_t = 4, value_parser = crate::count)]
    parallel: usize,
    /// Requests that may wait for a free sequence slot; past it the server answers 429
    #[arg(long, default_value_t = 64, value_parser = crate::count)]
    queue: usize,
    /// Require `Authorization: Bearer KEY` on every API request [env: ATTN_API_KEY]
    #[arg(long)]
    api_key: Option<String>,
    /// Let pages from this origin (e.g. http://localhost:3000) call the API from a browser
    #[arg(long)]
    cors_origin: Option<String>,
    /// Largest request body in bytes; larger ones get 413
    #[arg(long, default_value_t = 2 << 20)]
    max_body_bytes: usize,
    /// Worker threads for the model (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    crate::set_threads(a.threads)?;
    let api_key = a.api_key.clone().or_else(|| std::env::var("ATTN_API_KEY").ok().filter(|k| !k.is_empty()));
    let opts = ServeOptions { parallel: a.parallel, queue: a.queue, api_key, cors_origin: a.cors_origin.clone(), max_body_bytes: a.max_body_bytes };
    if let Some(origin) = &a.cors_origin {
        anyhow::ensure!(origin.parse::<http_origin::Check>().is_ok(), "--cors-origin {origin:?} is not an origin such as http://localhost:3000");
    }
    let (model_dir, weights, emb_dir) = (a.model.clone(), a.weights.clone(), a.embedding_model.clone());
    let load = move || load(&model_dir, &weights, emb_dir.as_deref()).map_err(|e| format!("{e:#}"));
    let (host, keyed) = (a.host.clone(), opts.api_key.is_some());
    attn_serve::run_blocking(&a.host, a.port, opts, load, |addr| {
        eprintln!("attn serve: listening on http://{addr} (model {}, loading)", a.model.display());
        if host != "127.0.0.1" && host != "localhost" && !keyed {
            eprintln!("note: listening on {host} without --api-key: anyone who can reach this port can use the model");
        }
    })?;
    Ok(())
}

fn load(dir: &std::path::Path, weights: &crate::WeightArgs, emb: Option<&std::path::Path>) -> anyhow::Result<Loaded> {
    let (model, tok) = weights.load(dir)?;
    let template = attn_tokenizer::chat::ChatTemplate::for_dir(dir).map_err(|e| e.to_string());
    if let Err(e) = &template {
        eprintln!("warning: chat requests will fail: {e}");
    }
    let gen_cfg = crate::generation_config(dir)?;
    let embedder = match emb {
        Some(d) => {
            let enc = crate::embed::Encoder::load(d)?;
            let max_len = enc.max_len();
            Some(Embedder { name: crate::inspect::model_name(d), bert: enc.bert, tok: Arc::from(enc.tok), max_len })
        }
        None => None,
    };
    eprintln!("attn serve: loaded ({})", model.describe());
    Ok(Loaded { chat: ChatModel { name: crate::inspect::model_name(dir), model, tok: Arc::from(tok), template, gen_cfg }, embedder })
}

/// A CORS origin: `scheme://host[:port]`, nothing after.
mod http_origin {
    pub struct Check;
    impl std::str::FromStr for Check {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://")).ok_or(())?;
            (!rest.is_empty() && !rest.contains('/')).then_some(Check).ok_or(())
        }
    }
}
