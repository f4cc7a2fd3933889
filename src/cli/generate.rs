//! `orchestra generate`: one instrument, streamed to the terminal.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::engine::{ChatMessage, GenerateRequest, LoadOptions, Model, SamplingParams};

/// Sampling and length flags shared by every command that generates.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 256)]
    pub max_tokens: u32,
    /// 0 = greedy (always the most likely token); higher is more random.
    #[arg(long, short = 't', default_value_t = 0.8)]
    pub temperature: f32,
    /// Only sample among the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: i32,
    /// Nucleus sampling: smallest set of tokens whose probability reaches p (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than p x the best one (0 = off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalise repeated tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Seed for reproducible sampling (random when absent).
    #[arg(long)]
    pub seed: Option<u32>,
    /// End the answer before this string (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// A GBNF grammar file that constrains the output.
    #[arg(long)]
    pub grammar: Option<PathBuf>,
    /// Keep generating past end-of-text (for benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
}

impl SamplingArgs {
    pub fn to_sampling(&self) -> anyhow::Result<SamplingParams> {
        let grammar = match &self.grammar {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading grammar file `{}`", p.display()))?,
            ),
            None => None,
        };
        Ok(SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            grammar,
            ..SamplingParams::default()
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// The model: a GGUF file, or a reference as in a score (`hf:ORG/REPO/FILE.gguf`,
    /// `hf:ORG/REPO:Q4_K_M`), taken from the Hugging Face cache.
    #[arg(long, short = 'm', value_name = "FILE|REF")]
    pub model: String,
    /// The user's message.
    pub prompt: String,
    /// A system message put before the prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Send the prompt as is, without the model's chat template.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Tokens of context for the request (0 = the model's, at most 4096).
    #[arg(long, default_value_t = 0)]
    pub context: u32,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<i32>,
    /// End with a timing summary on stderr (last line: `decode: <N> tok/s`).
    #[arg(long)]
    pub stats: bool,
    #[command(flatten)]
    pub pull: super::hub::PullFlag,
}

/// Load a model with a progress bar on stderr (hidden when stderr is not a terminal).
pub fn load_with_bar(path: &std::path::Path, options: &LoadOptions) -> anyhow::Result<Model> {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("loading {msg} {bar:30} {percent:>3}% {elapsed}")
            .expect("a valid progress template"),
    );
    bar.set_message(
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let shown = bar.clone();
    let model = Model::load_with_progress(path, options, move |p| {
        shown.set_position((p * 1000.0) as u64)
    });
    bar.finish_and_clear();
    Ok(model?)
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let options = LoadOptions {
        context: args.context,
        slots: 1,
        threads: args.threads,
        ..LoadOptions::default()
    };
    let path = super::model_file(&args.model, args.pull)?;
    let model = load_with_bar(&path, &options)?;
    let request = if args.raw {
        GenerateRequest::raw(args.prompt.clone())
    } else {
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(ChatMessage::system(s.clone()));
        }
        messages.push(ChatMessage::user(args.prompt.clone()));
        GenerateRequest::chat(messages)
    }
    .with_sampling(args.sampling.to_sampling()?)
    .with_max_tokens(args.sampling.max_tokens)
    .with_stop(args.sampling.stop.clone())
    .with_ignore_eos(args.sampling.ignore_eos);
    let generation = model.generate(request)?;
    let mut out = std::io::stdout().lock();
    let completion = generation.blocking_finish_with(|t| {
        let _ = out.write_all(t.as_bytes());
        let _ = out.flush();
    })?;
    let _ = writeln!(out);
    drop(out);
    if args.stats {
        let info = model.info();
        let t = &completion.timings;
        eprintln!("model: {} ({} params)", info.name, info.n_params);
        eprintln!("load: {:.0} ms", info.load_ms);
        eprintln!(
            "prompt: {} tokens, {:.1} tok/s",
            completion.prompt_tokens, t.prompt_tok_s
        );
        eprintln!("time to first token: {:.1} ms", t.ttft_ms);
        eprintln!(
            "generated: {} tokens ({:?})",
            completion.completion_tokens, completion.finish_reason
        );
        eprintln!("decode: {:.1} tok/s", t.decode_tok_s);
    }
    Ok(())
}
