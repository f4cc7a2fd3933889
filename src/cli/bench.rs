//! `orchestra bench`: engine throughput against a bare llama-cpp-2 loop on the same
//! ~150M-parameter q8_0 synthetic model, in one process, printed as a table of ratios.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use crate::engine::{GenerateRequest, LoadOptions, Model, SamplingParams, baseline};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Tokens each stream generates.
    #[arg(long, default_value_t = 128)]
    pub tokens: u32,
    /// Concurrent stream counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub streams: Vec<u32>,
    /// Benchmark this model instead of the synthetic ~150M q8_0 one: a GGUF file or a
    /// reference as in a score (`hf:ORG/REPO/FILE.gguf`, from the cache).
    #[arg(long, value_name = "FILE|REF")]
    pub model: Option<String>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<i32>,
    #[command(flatten)]
    pub pull: super::hub::PullFlag,
    /// Tokens of the prompt-processing measurement (like llama-bench's pp512); 0 skips
    /// it.
    #[arg(long, default_value_t = 512)]
    pub prompt: u32,
    /// Repeat each measurement and keep the best (less noise).
    #[arg(long, default_value_t = 2)]
    pub repeat: u32,
}

const PROMPT: &str =
    "<|im_start|>user\nTell me a long story about a band.<|im_end|>\n<|im_start|>assistant\n";

/// The synthetic benchmark model, written on first use.
pub fn bench_model() -> anyhow::Result<PathBuf> {
    let dir = crate::home::orchestra_home().join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bench-150m-q8_0.gguf");
    if !path.exists() {
        eprintln!(
            "writing the ~150M-parameter q8_0 benchmark model to {} …",
            path.display()
        );
        let tmp = path.with_extension("gguf.part");
        crate::synth::write_model(&crate::synth::bench_spec(), &tmp)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// Drop the file's pages from the OS cache so the next load reads the disk.
fn drop_page_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    if let Ok(f) = std::fs::File::open(path) {
        // SAFETY: a plain advisory call on a file descriptor we own.
        unsafe {
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

fn engine_run(model: &Model, streams: u32, tokens: u32) -> anyhow::Result<(f64, f64)> {
    let request = GenerateRequest::raw(PROMPT)
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(tokens)
        .with_ignore_eos(true);
    let start = Instant::now();
    let gens: Vec<_> = (0..streams)
        .map(|_| model.generate(request.clone()))
        .collect::<Result<_, _>>()?;
    let mut total = 0usize;
    let mut per_stream = 0.0;
    for g in gens {
        let c = g.blocking_finish_with(|_| {})?;
        total += c.completion_tokens;
        per_stream += c.timings.decode_tok_s;
    }
    let wall = start.elapsed().as_secs_f64();
    // (decode tok/s summed over streams, tokens over wall time including the prompt)
    Ok((per_stream, total as f64 / wall))
}

/// Prompt tok/s of one request whose prompt is `tokens` tokens long; `run` makes each
/// prompt different, so no cached prefix is reused.
fn prompt_run(model: &Model, tokens: u32, run: u32) -> anyhow::Result<(usize, f64)> {
    let filler: String = (0..tokens)
        .map(|i| format!(" band{} plays", (i * 31 + run) % 97))
        .collect();
    let mut ids = model.tokenize(&format!("run {run}:{filler}"), false);
    ids.truncate(tokens as usize);
    let request = GenerateRequest::raw(model.detokenize(&ids))
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(1)
        .with_ignore_eos(true);
    let c = model.generate(request)?.blocking_finish_with(|_| {})?;
    Ok((c.prompt_tokens, c.timings.prompt_tok_s))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let path = match &args.model {
        Some(m) => super::model_file(m, args.pull)?,
        None => bench_model()?,
    };
    let max_streams = args.streams.iter().copied().max().unwrap_or(1);
    let options = LoadOptions {
        context: 1024.max(args.prompt + 16),
        slots: max_streams,
        threads: args.threads,
        ..LoadOptions::default()
    };

    drop_page_cache(&path);
    let t = Instant::now();
    let model = Model::load(&path, &options)?;
    let cold_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(model);
    let t = Instant::now();
    let model = Model::load(&path, &options)?;
    let warm_ms = t.elapsed().as_secs_f64() * 1e3;
    let info = model.info().clone();

    // Warm-up, then best of `repeat` for each measurement. The baseline for N streams
    // is a bare llama-cpp-2 loop decoding N sequences in one batch per step.
    engine_run(&model, 1, 16)?;
    let mut rows = Vec::new();
    for &n in &args.streams {
        let mut bare = 0.0f64;
        let mut best = (0.0f64, 0.0f64);
        for _ in 0..args.repeat.max(1) {
            let b = if n == 1 {
                baseline::bare_decode(&path, PROMPT, args.tokens as usize, args.threads)?
                    .decode_tok_s
            } else {
                baseline::bare_batched_decode(
                    &path,
                    PROMPT,
                    n as usize,
                    args.tokens as usize,
                    args.threads,
                    false,
                )?
            };
            bare = bare.max(b);
            let (decode, wall) = engine_run(&model, n, args.tokens)?;
            if decode > best.0 {
                best = (decode, wall);
            }
        }
        rows.push((n, bare, best.0, best.1));
    }
    let mut prompt = None;
    for run in 0..args.repeat.max(1) * u32::from(args.prompt > 0) {
        let (n, tps) = prompt_run(&model, args.prompt, run)?;
        if prompt.is_none_or(|(_, best)| tps > best) {
            prompt = Some((n, tps));
        }
    }

    println!(
        "model: {} — {:.1}M parameters, {} threads, {} tokens per stream",
        info.name,
        info.n_params as f64 / 1e6,
        args.threads.unwrap_or_else(crate::engine::default_threads),
        args.tokens
    );
    println!("load: cold {cold_ms:.0} ms (page cache dropped), warm {warm_ms:.0} ms");
    println!();
    println!(
        "| streams | bare loop tok/s | engine tok/s | engine / bare | engine vs 1 stream | engine wall tok/s |"
    );
    println!(
        "|---------|-----------------|--------------|---------------|--------------------|-------------------|"
    );
    let one = rows
        .iter()
        .find(|r| r.0 == 1)
        .map(|r| r.2)
        .unwrap_or(rows[0].2);
    for (n, bare, decode, wall) in &rows {
        println!(
            "| {n:>7} | {bare:>15.1} | {decode:>12.1} | {:>12.3}x | {:>17.2}x | {wall:>17.1} |",
            decode / bare,
            decode / one
        );
    }
    println!();
    if let Some((n, tps)) = prompt {
        println!(
            "prompt processing: {n} tokens at {tps:.1} tok/s (engine, best of {})",
            args.repeat.max(1)
        );
        println!();
    }
    println!("tok/s: decode tokens per second after the first token, summed over streams;");
    println!("wall: all tokens over the wall time from submission, prompts included.");
    println!();
    println!(
        "reproduce: cargo run --release -- bench --tokens {} --streams {}",
        args.tokens,
        args.streams
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    Ok(())
}
