//! The worker thread of one loaded model: it owns the model's only `LlamaContext` and
//! runs continuous batching. Every step it admits queued requests into free slots
//! (one llama.cpp sequence each), drops cancelled ones, then decodes one batch holding
//! the next token of every generating sequence plus prompt chunks of newcomers, so a
//! new request joins without waiting for the others to finish.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use super::error::EngineError;
use super::model::ModelInfo;
use super::stream::{Completion, FinishReason, StreamItem, Timings};
use super::text::TextStream;
use super::tools::{CallFilter, ToolFormat, parse_tool_calls};

pub(crate) enum Command {
    Generate(Box<Job>),
    Embed(EmbedJob),
}

pub(crate) struct Job {
    /// Request id, for logs.
    pub id: u64,
    pub tokens: Vec<LlamaToken>,
    pub sampler: LlamaSampler,
    pub max_tokens: u32,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    /// Set when tools were offered: calls are held back and parsed.
    pub tools: Option<ToolParse>,
    pub tx: UnboundedSender<StreamItem>,
    pub submitted: Instant,
}

/// How to find a request's tool calls.
pub(crate) struct ToolParse {
    pub format: ToolFormat,
    /// Offered tool names.
    pub names: Vec<String>,
    /// Marker tokens (`[TOOL_CALLS]`) shown as text although they are special.
    pub special: Vec<LlamaToken>,
}

pub(crate) struct EmbedJob {
    pub inputs: Vec<Vec<LlamaToken>>,
    pub tx: oneshot::Sender<Result<Vec<Vec<f32>>, EngineError>>,
}

/// One request in a slot.
struct Seq {
    job: Box<Job>,
    /// llama.cpp sequence id (the slot index).
    seq: i32,
    /// Prompt tokens already decoded.
    fed: usize,
    /// Prompt tokens in the batch being decoded.
    feeding: usize,
    /// Tokens in this sequence's KV cells.
    n_past: i32,
    /// Exactly the tokens in this sequence's KV cells, in order: kept as the slot's
    /// prompt cache when the request ends.
    decoded: Vec<LlamaToken>,
    /// Prompt tokens reused from the slot's cache (not decoded again).
    cached: usize,
    /// Last sampled token, decoded in the next step.
    last: Option<LlamaToken>,
    /// Batch index of this sequence's logits in the current step.
    logits_at: Option<i32>,
    generated: usize,
    text: TextStream,
    /// Holds tool-call text back from the stream (requests with tools only).
    calls: Option<CallFilter>,
    admitted: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    gaps: Welford,
}

/// How many tokens two sequences share from the start.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Running mean and variance of inter-token gaps.
#[derive(Default)]
struct Welford {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Welford {
    fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }
    fn std(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.m2 / (self.n - 1) as f64).sqrt()
        }
    }
}

pub(crate) struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    info: ModelInfo,
    active: Arc<AtomicUsize>,
    slots: Vec<Option<Seq>>,
    /// Per slot, the tokens its KV cells still hold from the request it served last
    /// (llama-server's `cache_prompt`): a new request takes the free slot sharing the
    /// longest prefix with its prompt and decodes only the rest.
    cache: Vec<Vec<LlamaToken>>,
    /// Per slot, when it was last taken (a counter; 0 = never).
    last_used: Vec<u64>,
    uses: u64,
    queue: VecDeque<Box<Job>>,
    batch: LlamaBatch<'static>,
}

impl<'m> Worker<'m> {
    pub fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        info: ModelInfo,
        active: Arc<AtomicUsize>,
    ) -> Self {
        let slots = (0..info.slots).map(|_| None).collect();
        let cache = (0..info.slots).map(|_| Vec::new()).collect();
        let last_used = vec![0; info.slots as usize];
        let batch = LlamaBatch::new(ctx.n_batch() as usize, info.slots.max(1) as i32);
        Self {
            model,
            ctx,
            info,
            active,
            slots,
            cache,
            last_used,
            uses: 0,
            queue: VecDeque::new(),
            batch,
        }
    }

    pub fn run(mut self, rx: Receiver<Command>) {
        let mut open = true;
        loop {
            let idle = self.slots.iter().all(Option::is_none) && self.queue.is_empty();
            if idle {
                if !open {
                    break;
                }
                match rx.recv() {
                    Ok(cmd) => self.accept(cmd),
                    Err(_) => break,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(cmd) => self.accept(cmd),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.drop_cancelled();
            self.admit();
            if self.slots.iter().any(Option::is_some) {
                self.step();
            }
        }
        tracing::debug!(model = %self.info.name, "worker stopped");
    }

    fn accept(&mut self, cmd: Command) {
        match cmd {
            Command::Generate(job) => self.queue.push_back(job),
            Command::Embed(job) => {
                let result = self.embed(&job.inputs);
                let _ = job.tx.send(result);
                self.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    fn drop_cancelled(&mut self) {
        let before = self.queue.len();
        self.queue.retain(|j| !j.tx.is_closed());
        let gone = before - self.queue.len();
        if gone > 0 {
            self.active.fetch_sub(gone, Ordering::SeqCst);
        }
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_some_and(|s| s.job.tx.is_closed()) {
                let id = self.slots[i].as_ref().map(|s| s.job.id);
                tracing::debug!(model = %self.info.name, slot = i, ?id, "request cancelled");
                self.free(i, true);
            }
        }
    }

    /// The free slot for `tokens`: the one whose cache shares the longest prefix with
    /// them when that prefix is a real part of the prompt (a tenth or more, like
    /// llama-server's slot similarity); otherwise the least recently used slot, so one
    /// conversation does not overwrite another's cache for a shared BOS token.
    fn pick_slot(&self, tokens: &[LlamaToken]) -> Option<(usize, usize)> {
        let free = || (0..self.slots.len()).filter(|&i| self.slots[i].is_none());
        let best = free()
            .map(|i| (i, common_prefix(&self.cache[i], tokens)))
            .max_by_key(|&(i, common)| (common, std::cmp::Reverse(self.last_used[i])))?;
        if best.1 > 0 && best.1 * 10 >= tokens.len() {
            return Some(best);
        }
        free()
            .min_by_key(|&i| self.last_used[i])
            .map(|i| (i, common_prefix(&self.cache[i], tokens)))
    }

    fn admit(&mut self) {
        while !self.queue.is_empty() {
            let Some((i, common)) = self.pick_slot(&self.queue[0].tokens) else {
                return;
            };
            let Some(job) = self.queue.pop_front() else {
                return;
            };
            self.uses += 1;
            self.last_used[i] = self.uses;
            // Keep the shared prefix, but always decode at least the prompt's last token
            // (its logits give the first answer token).
            let mut keep = common.min(job.tokens.len().saturating_sub(1));
            let cached = std::mem::take(&mut self.cache[i]);
            if keep < cached.len() {
                let trimmed = self
                    .ctx
                    .clear_kv_cache_seq(Some(i as u32), Some(keep as u32), None)
                    .unwrap_or(false);
                // A sliding-window cache may have dropped the prefix's oldest cells (its
                // lowest position is above 0): the next tokens would not attend as they
                // did, so start over, as when a cache cannot drop a suffix at all.
                if !trimmed || (keep > 0 && self.ctx.kv_cache_seq_pos_min(i as i32) > 0) {
                    let _ = self.ctx.clear_kv_cache_seq(Some(i as u32), None, None);
                    keep = 0;
                }
            }
            if keep > 0 {
                tracing::debug!(model = %self.info.name, slot = i, reused = keep, prompt = job.tokens.len(), "prompt cache hit");
            }
            let decoded = job.tokens[..keep].to_vec();
            let stop = job.stop.clone();
            let calls = job.tools.as_ref().map(|t| CallFilter::new(t.format));
            self.slots[i] = Some(Seq {
                job,
                seq: i as i32,
                fed: keep,
                feeding: 0,
                n_past: keep as i32,
                decoded,
                cached: keep,
                last: None,
                logits_at: None,
                generated: 0,
                text: TextStream::new(stop),
                calls,
                admitted: Instant::now(),
                first_token: None,
                last_token: None,
                gaps: Welford::default(),
            });
        }
    }

    /// Frees a slot at once. With `keep_cache`, its KV cells stay as the slot's prompt
    /// cache (they are overwritten by whichever request takes the slot next);
    /// otherwise they are cleared.
    fn free(&mut self, i: usize, keep_cache: bool) {
        if let Some(s) = self.slots[i].take() {
            if keep_cache && s.decoded.len() == s.n_past as usize {
                self.cache[i] = s.decoded;
            } else {
                let _ = self.ctx.clear_kv_cache_seq(Some(i as u32), None, None);
                self.cache[i].clear();
            }
            self.active.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Decode one batch: the next token of every generating sequence, then prompt
    /// chunks up to the batch size; then sample every sequence that has logits.
    fn step(&mut self) {
        let n_batch = self.ctx.n_batch() as usize;
        self.batch.clear();
        for s in self.slots.iter_mut().flatten() {
            s.logits_at = None;
            if let Some(tok) = s.last {
                self.batch
                    .add(tok, s.n_past, &[s.seq], true)
                    .expect("batch has room for one token per slot");
                s.logits_at = Some(self.batch.n_tokens() - 1);
            }
        }
        for s in self.slots.iter_mut().flatten() {
            if s.last.is_some() || s.fed == s.job.tokens.len() {
                continue;
            }
            let room = n_batch - self.batch.n_tokens() as usize;
            if room == 0 {
                break;
            }
            let take = room.min(s.job.tokens.len() - s.fed);
            s.feeding = take;
            for k in 0..take {
                let pos = s.fed + k;
                let is_last = pos + 1 == s.job.tokens.len();
                self.batch
                    .add(s.job.tokens[pos], pos as i32, &[s.seq], is_last)
                    .expect("prompt chunk sized to the batch");
                if is_last {
                    s.logits_at = Some(self.batch.n_tokens() - 1);
                }
            }
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            // A failed step fails the requests in it; the worker and the other queued
            // requests go on.
            tracing::warn!(model = %self.info.name, error = %e, "decode failed");
            for i in 0..self.slots.len() {
                if let Some(s) = &self.slots[i] {
                    let tx = s.job.tx.clone();
                    self.free(i, false);
                    let _ = tx.send(StreamItem::Failed(EngineError::Decode {
                        model: self.info.name.clone(),
                        reason: e.to_string(),
                    }));
                }
            }
            return;
        }
        for s in self.slots.iter_mut().flatten() {
            if let Some(tok) = s.last {
                s.n_past += 1;
                s.decoded.push(tok);
            } else {
                s.decoded
                    .extend_from_slice(&s.job.tokens[s.fed..s.fed + s.feeding]);
                s.fed += s.feeding;
                s.n_past += s.feeding as i32;
            }
            s.feeding = 0;
        }
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let Some(s) = self.slots[i].as_mut() else {
                continue;
            };
            let Some(idx) = s.logits_at else { continue };
            let token = s.job.sampler.sample(&self.ctx, idx);
            let vocab = self.model.vocab();
            let eog = vocab.is_eog(token);
            if s.first_token.is_none() {
                s.first_token = Some(now);
            } else if let Some(prev) = s.last_token {
                s.gaps.add((now - prev).as_secs_f64() * 1e3);
            }
            s.last_token = Some(now);
            let mut finish = None;
            if eog && !s.job.ignore_eos {
                finish = Some(FinishReason::Stop);
            } else {
                s.generated += 1;
                let special = s
                    .job
                    .tools
                    .as_ref()
                    .is_some_and(|t| t.special.contains(&token));
                let piece = vocab.token_to_piece(token, special, None);
                let pushed = s.text.push(&piece);
                let shown = match s.calls.as_mut() {
                    Some(f) => f.push(&pushed.text),
                    None => pushed.text,
                };
                if !shown.is_empty() {
                    let _ = s.job.tx.send(StreamItem::Text(shown));
                }
                if pushed.stopped {
                    finish = Some(FinishReason::StopString);
                } else if s.generated >= s.job.max_tokens as usize
                    || s.n_past as usize + 2 > self.info.context as usize
                {
                    finish = Some(FinishReason::Length);
                }
                s.last = Some(token);
            }
            if let Some(reason) = finish {
                let mut rest = s.text.finish();
                if reason == FinishReason::StopString {
                    rest.clear();
                }
                let mut completion = completion(s, reason, now);
                if let (Some(filter), Some(tools)) = (s.calls.as_mut(), s.job.tools.as_ref()) {
                    let mut shown = filter.push(&rest);
                    let (content, calls) =
                        parse_tool_calls(tools.format, &completion.text, &tools.names);
                    if calls.is_empty() {
                        shown.push_str(&filter.rest());
                    } else {
                        completion.text = content;
                        completion.tool_calls = calls;
                        completion.finish_reason = FinishReason::ToolCalls;
                    }
                    rest = shown;
                }
                if !rest.is_empty() {
                    let _ = s.job.tx.send(StreamItem::Text(rest));
                }
                let tx = s.job.tx.clone();
                // Free first: whoever sees the answer also sees the slot free.
                self.free(i, true);
                let _ = tx.send(StreamItem::Done(completion));
            }
        }
    }

    fn embed(&mut self, inputs: &[Vec<LlamaToken>]) -> Result<Vec<Vec<f32>>, EngineError> {
        let n_batch = self.ctx.n_batch() as usize;
        let max_seq = self.info.slots.max(1) as usize;
        let mut out = Vec::with_capacity(inputs.len());
        let mut start = 0;
        while start < inputs.len() {
            // As many whole inputs as fit one batch and the sequence limit.
            let mut end = start;
            let mut total = 0;
            while end < inputs.len() && end - start < max_seq {
                let n = inputs[end].len().min(n_batch);
                if total + n > n_batch && end > start {
                    break;
                }
                total += n;
                end += 1;
            }
            self.ctx.clear_kv_cache();
            let mut batch = LlamaBatch::new(n_batch, max_seq as i32);
            for (k, toks) in inputs[start..end].iter().enumerate() {
                let toks = &toks[..toks.len().min(n_batch)];
                batch
                    .add_sequence(toks, k as i32, true)
                    .expect("inputs sized to the batch");
            }
            let err = |e: String| EngineError::Decode {
                model: self.info.name.clone(),
                reason: e,
            };
            self.ctx
                .decode(&mut batch)
                .map_err(|e| err(e.to_string()))?;
            for k in 0..(end - start) {
                let v = self
                    .ctx
                    .embeddings_seq_ith(k as i32)
                    .map_err(|e| err(e.to_string()))?;
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                out.push(v.iter().map(|x| x / norm).collect());
            }
            start = end;
        }
        self.ctx.clear_kv_cache();
        Ok(out)
    }
}

fn completion(s: &Seq, reason: FinishReason, now: Instant) -> Completion {
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    let first = s.first_token.unwrap_or(now);
    let prompt_ms = ms(s.admitted, first).max(1e-6);
    let decode_ms = ms(first, now);
    let decoded_after_first = s.generated.saturating_sub(1);
    Completion {
        text: s.text.text().to_owned(),
        finish_reason: reason,
        prompt_tokens: s.job.tokens.len(),
        cached_tokens: s.cached,
        completion_tokens: s.generated,
        timings: Timings {
            queued_ms: ms(s.job.submitted, s.admitted),
            ttft_ms: ms(s.job.submitted, first),
            prompt_tok_s: (s.job.tokens.len() - s.cached) as f64 / (prompt_ms / 1e3),
            decode_tok_s: if decode_ms > 0.0 {
                decoded_after_first as f64 / (decode_ms / 1e3)
            } else {
                0.0
            },
            total_ms: ms(s.job.submitted, now),
            gap_mean_ms: s.gaps.mean,
            gap_std_ms: s.gaps.std(),
        },
        tool_calls: Vec::new(),
    }
}
