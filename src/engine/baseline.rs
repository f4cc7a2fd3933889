//! The baseline for benchmarks: a bare llama-cpp-2 decode loop (one sequence, greedy,
//! no scheduler, no channels), so the engine's overhead can be measured against it in
//! the same process.

use std::num::NonZeroU32;
use std::path::Path;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;

use super::backend::backend;
use super::error::EngineError;
use super::model::default_threads;

/// What the bare loop measured.
#[derive(Debug, Clone)]
pub struct BareRun {
    pub tokens: usize,
    /// Decode speed after the first token.
    pub decode_tok_s: f64,
    pub load_ms: f64,
}

/// Like [`bare_decode`] with `streams` sequences decoded together in one batch per
/// step (each sequence gets the same prompt). Returns aggregate decode tokens/s.
pub fn bare_batched_decode(
    path: &Path,
    prompt: &str,
    streams: usize,
    n_tokens: usize,
    threads: Option<i32>,
    unified: bool,
) -> Result<f64, EngineError> {
    // Declared first, so dropped last: after the context, the thread's team goes.
    let _team = super::cores::ReleaseTeamOnDrop;
    super::probe::check(path, &super::LoadOptions::default())?;
    let params = LlamaModelParams::default();
    let model = LlamaModel::load_from_file(backend(), path, &params)
        .map_err(|_| EngineError::LoadFailed(path.to_path_buf()))?;
    let threads = threads.unwrap_or_else(default_threads);
    let n_ctx = 1024 * streams as u32;
    let cparams = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_seq_max(streams as u32)
        .with_kv_unified(unified)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx =
        model
            .new_context(backend(), cparams)
            .map_err(|_| EngineError::ContextFailed {
                path: path.to_path_buf(),
                n_ctx,
            })?;
    let decode_err = |e: llama_cpp_2::DecodeError| EngineError::Decode {
        model: "baseline".into(),
        reason: e.to_string(),
    };
    let tokens = model.vocab().tokenize(prompt.as_bytes(), true, true);
    let mut batch = LlamaBatch::new(512, streams as i32);
    let mut samplers: Vec<_> = (0..streams).map(|_| LlamaSampler::greedy()).collect();
    let mut last = vec![0i32; streams];
    let end = tokens.len() - 1;
    for (s, (tok, sampler)) in last.iter_mut().zip(&mut samplers).enumerate() {
        batch.clear();
        for (i, t) in tokens.iter().enumerate() {
            batch
                .add(*t, i as i32, &[s as i32], i == end)
                .expect("prompt fits");
        }
        ctx.decode(&mut batch).map_err(decode_err)?;
        *tok = sampler.sample(&ctx, batch.n_tokens() - 1).0;
    }
    let started = Instant::now();
    for pos in (tokens.len() as i32..).take(n_tokens) {
        batch.clear();
        for (s, &tok) in last.iter().enumerate() {
            batch
                .add(llama_cpp_2::token::LlamaToken(tok), pos, &[s as i32], true)
                .expect("one token per stream fits");
        }
        ctx.decode(&mut batch).map_err(decode_err)?;
        for (s, (tok, sampler)) in last.iter_mut().zip(&mut samplers).enumerate() {
            *tok = sampler.sample(&ctx, s as i32).0;
        }
    }
    Ok((n_tokens * streams) as f64 / started.elapsed().as_secs_f64())
}

/// Load `path`, decode `prompt`, then greedily generate `n_tokens` tokens (end-of-text
/// ignored) with the plainest llama-cpp-2 loop.
pub fn bare_decode(
    path: &Path,
    prompt: &str,
    n_tokens: usize,
    threads: Option<i32>,
) -> Result<BareRun, EngineError> {
    let _team = super::cores::ReleaseTeamOnDrop;
    let t0 = Instant::now();
    super::probe::check(path, &super::LoadOptions::default())?;
    let params = LlamaModelParams::default();
    let model = LlamaModel::load_from_file(backend(), path, &params)
        .map_err(|_| EngineError::LoadFailed(path.to_path_buf()))?;
    let threads = threads.unwrap_or_else(default_threads);
    let n_ctx = 2048;
    let cparams = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(512)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx =
        model
            .new_context(backend(), cparams)
            .map_err(|_| EngineError::ContextFailed {
                path: path.to_path_buf(),
                n_ctx,
            })?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let tokens = model.vocab().tokenize(prompt.as_bytes(), true, true);
    let mut batch = LlamaBatch::new(512, 1);
    let last = tokens.len() - 1;
    for (i, t) in tokens.iter().enumerate() {
        batch
            .add(*t, i as i32, &[0], i == last)
            .expect("prompt fits");
    }
    let decode_err = |e: llama_cpp_2::DecodeError| EngineError::Decode {
        model: "baseline".into(),
        reason: e.to_string(),
    };
    ctx.decode(&mut batch).map_err(decode_err)?;
    let mut sampler = LlamaSampler::greedy();
    let mut started = None;
    for (i, pos) in (tokens.len() as i32..).take(n_tokens).enumerate() {
        let tok = sampler.sample(&ctx, batch.n_tokens() - 1);
        if i == 0 {
            started = Some(Instant::now());
        }
        batch.clear();
        batch.add(tok, pos, &[0], true).expect("one token fits");
        ctx.decode(&mut batch).map_err(decode_err)?;
    }
    let secs = started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
    Ok(BareRun {
        tokens: n_tokens,
        decode_tok_s: if secs > 0.0 {
            n_tokens as f64 / secs
        } else {
            0.0
        },
        load_ms,
    })
}
