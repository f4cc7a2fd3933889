//! The worker thread of one loaded model: it owns the model's only `LlamaContext` and
//! runs continuous batching. Every step it admits queued requests into free slots
//! (one llama.cpp sequence each), drops cancelled ones, then decodes one batch holding
//! the next token of every generating sequence plus prompt chunks of newcomers, so a
//! new request joins without waiting for the others to finish.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use super::cores::{Cores, Grant, Member};
use super::error::EngineError;
use super::model::ModelInfo;
use super::snapshot::{self, Snapshots, Tier};
use super::stream::{Completion, FinishReason, PromptSources, StreamItem, Timings};
use super::text::TextStream;
use super::tools::{CallFilter, ToolFormat, drop_unfinished_call, parse_tool_calls};

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
    /// Tokens of the prompt before its last message (a chat's preamble and history),
    /// where a prefix snapshot serves the next session best.
    pub prefix_hint: Option<usize>,
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

/// What a worker has decoded, shared with its model's handles.
#[derive(Debug)]
pub(crate) struct DecodeCounters {
    decode_calls: AtomicU64,
    threads_min: AtomicUsize,
    threads_max: AtomicUsize,
    threads_last: AtomicUsize,
}

impl Default for DecodeCounters {
    fn default() -> Self {
        Self {
            decode_calls: AtomicU64::new(0),
            threads_min: AtomicUsize::new(usize::MAX),
            threads_max: AtomicUsize::new(0),
            threads_last: AtomicUsize::new(0),
        }
    }
}

impl DecodeCounters {
    fn record_threads(&self, n: usize) {
        self.threads_min.fetch_min(n, Ordering::Relaxed);
        self.threads_max.fetch_max(n, Ordering::Relaxed);
        self.threads_last.store(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> DecodeStats {
        let min = self.threads_min.load(Ordering::Relaxed);
        DecodeStats {
            decode_calls: self.decode_calls.load(Ordering::Relaxed),
            threads_min: if min == usize::MAX { 0 } else { min },
            threads_max: self.threads_max.load(Ordering::Relaxed),
            threads_last: self.threads_last.load(Ordering::Relaxed),
        }
    }
}

/// A model's decode work so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    /// llama.cpp decode calls: generation steps and embedding batches.
    pub decode_calls: u64,
    /// The fewest threads a step ran with (0 before the first step).
    pub threads_min: usize,
    /// The most threads a step ran with.
    pub threads_max: usize,
    /// The threads of the latest step.
    pub threads_last: usize,
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
    /// Prompt tokens not decoded again: the slot's cache or a prefix snapshot.
    cached: usize,
    /// Which of those came from where (`computed` is filled in at the end).
    sources: PromptSources,
    /// Prefill pauses after this many prompt tokens to snapshot them.
    snapshot_at: Option<usize>,
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
    /// Embedding requests waiting for the next step, answered together.
    embeds: Vec<EmbedJob>,
    /// This worker's place in the process-wide core allotment.
    member: Member,
    /// Threads the model was loaded with: what a step uses when it has the cores.
    want: usize,
    /// Threads the context decodes with now.
    threads_now: usize,
    /// Whether a step ran with more than one thread since the worker was last idle
    /// (so this thread may own a parked OpenMP team).
    team_live: bool,
    /// The context's raw pointer, to change its threads (`None`: they stay fixed).
    raw: Option<*mut llama_cpp_sys_2::llama_context>,
    counters: Arc<DecodeCounters>,
    /// Prefix snapshots in RAM and on disk (`None`: off).
    snapshots: Option<Snapshots>,
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
            embeds: Vec::new(),
            member: Cores::global().join(),
            want: 1,
            threads_now: 1,
            team_live: false,
            raw: None,
            counters: Arc::default(),
            snapshots: None,
        }
    }

    /// Snapshot long prompt prefixes and reuse them across slots, sessions and loads.
    pub fn with_snapshots(mut self, snapshots: Option<Snapshots>) -> Self {
        self.snapshots = snapshots;
        self
    }

    /// The threads the context was made with, and where to count its decode work.
    pub fn with_threads(mut self, threads: i32, counters: Arc<DecodeCounters>) -> Self {
        self.threads_now = threads.max(1) as usize;
        self.want = self.threads_now.min(self.member.total());
        self.raw = raw_context(&self.ctx, threads);
        if self.raw.is_none() {
            tracing::warn!(model = %self.info.name, "cannot change the threads of this llama.cpp context: models decoding at once take turns instead of sharing the cores");
        }
        self.counters = counters;
        self
    }

    pub fn run(mut self, rx: Receiver<Command>) {
        let mut open = true;
        loop {
            if self.is_idle() {
                self.leave_shares_if_idle();
                if !open {
                    break;
                }
                match rx.recv() {
                    Ok(cmd) => self.accept(cmd),
                    Err(_) => break,
                }
                self.member.set_busy(true);
            }
            open &= self.receive(&rx);
            self.drop_cancelled();
            if self.is_idle() {
                continue;
            }
            // Wait for this step's cores; what arrives meanwhile joins the step.
            let cores = self.take_cores();
            open &= self.receive(&rx);
            self.drop_cancelled();
            self.admit();
            if !self.embeds.is_empty() {
                self.embed_queued();
            }
            if self.slots.iter().any(Option::is_some) {
                self.step();
            }
            drop(cores);
        }
        tracing::debug!(model = %self.info.name, "worker stopped");
    }

    /// Give up this worker's share of the cores once its last request is answered, so
    /// whoever sees the answer sees the share back with the others; and its parked
    /// OpenMP threads, so they never outnumber the cores (see `release_thread_team`).
    fn leave_shares_if_idle(&mut self) {
        if self.is_idle() {
            self.member.set_busy(false);
            if self.team_live {
                super::cores::release_thread_team();
                self.team_live = false;
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.slots.iter().all(Option::is_none) && self.queue.is_empty() && self.embeds.is_empty()
    }

    /// Accept every command waiting in the channel; false once it is closed.
    fn receive(&mut self, rx: &Receiver<Command>) -> bool {
        loop {
            match rx.try_recv() {
                Ok(cmd) => self.accept(cmd),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// This step's threads from the process-wide allotment, set on the context when
    /// they changed.
    fn take_cores(&mut self) -> Grant {
        let grant = match self.raw {
            Some(_) => self.member.acquire(self.want),
            None => self.member.acquire_exact(self.threads_now),
        };
        let n = grant.threads();
        if let Some(raw) = self.raw
            && n != self.threads_now
        {
            // SAFETY: `raw` is this worker's own live context (checked in
            // `with_threads`), used on this thread only, between decode calls.
            unsafe { llama_cpp_sys_2::llama_set_n_threads(raw, n as i32, n as i32) };
            self.threads_now = n;
        }
        self.team_live |= self.threads_now > 1;
        self.counters.record_threads(self.threads_now);
        grant
    }

    fn accept(&mut self, cmd: Command) {
        match cmd {
            Command::Generate(job) => self.queue.push_back(job),
            Command::Embed(job) => self.embeds.push(job),
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
            let mut sources = PromptSources {
                slot: keep,
                ..PromptSources::default()
            };
            // Where the slot's cache falls short, a longer prefix snapshot may not.
            if let Some(snaps) = self.snapshots.as_mut()
                && let Some(found) = snaps.find(&job.tokens, keep)
            {
                if snapshot::restore(&mut self.ctx, i as i32, &found) {
                    keep = found.tokens;
                    sources = match found.tier {
                        Tier::Ram => PromptSources {
                            ram: keep,
                            ..PromptSources::default()
                        },
                        Tier::Disk => PromptSources {
                            disk: keep,
                            ..PromptSources::default()
                        },
                    };
                    tracing::debug!(model = %self.info.name, slot = i, tokens = keep, tier = ?found.tier, "prefix snapshot loaded");
                } else {
                    // The slot is empty now; the prompt is computed from the start.
                    tracing::warn!(model = %self.info.name, slot = i, "llama.cpp refused a prefix snapshot; it is deleted");
                    snaps.reject(&found);
                    keep = 0;
                    sources = PromptSources::default();
                }
            }
            let snapshot_at = self
                .snapshots
                .as_ref()
                .and_then(|s| s.point(&job.tokens, job.prefix_hint, keep));
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
                sources,
                snapshot_at,
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
            let mut take = room.min(s.job.tokens.len() - s.fed);
            if let Some(at) = s.snapshot_at
                && s.fed < at
            {
                // End the chunk where the snapshot is due.
                take = take.min(at - s.fed);
            }
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
        self.counters.decode_calls.fetch_add(1, Ordering::Relaxed);
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
        let mut due = Vec::new();
        for s in self.slots.iter_mut().flatten() {
            if let Some(tok) = s.last {
                s.n_past += 1;
                s.decoded.push(tok);
            } else {
                s.decoded
                    .extend_from_slice(&s.job.tokens[s.fed..s.fed + s.feeding]);
                s.fed += s.feeding;
                s.n_past += s.feeding as i32;
                if s.feeding > 0 && s.snapshot_at == Some(s.fed) {
                    due.push(s.seq);
                }
            }
            s.feeding = 0;
        }
        for seq in due {
            self.snapshot(seq as usize);
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
                    // Cut short by `max_tokens` inside a call: the whole calls before it
                    // go out, the unfinished one (and its fragment) never does.
                    let cut = reason == FinishReason::Length;
                    let text = if cut {
                        drop_unfinished_call(tools.format, &completion.text, &tools.names)
                    } else {
                        &completion.text
                    };
                    let (content, calls) = parse_tool_calls(tools.format, text, &tools.names);
                    if calls.is_empty() {
                        if text.len() < completion.text.len() {
                            // The stream held the fragment back from its marker on.
                            completion.text = text.to_owned();
                        } else {
                            shown.push_str(&filter.rest());
                        }
                    } else {
                        completion.text = content;
                        completion.tool_calls = calls;
                        if !cut {
                            completion.finish_reason = FinishReason::ToolCalls;
                        }
                    }
                    rest = shown;
                }
                if !rest.is_empty() {
                    let _ = s.job.tx.send(StreamItem::Text(rest));
                }
                let tx = s.job.tx.clone();
                // Free first: whoever sees the answer also sees the slot free.
                self.free(i, true);
                self.leave_shares_if_idle();
                let _ = tx.send(StreamItem::Done(completion));
            }
        }
    }

    /// Copy slot `i`'s cells, which hold exactly its prompt's first `snapshot_at`
    /// tokens now, into the snapshot store (RAM now, disk from the writer thread).
    fn snapshot(&mut self, i: usize) {
        let (Some(s), Some(snaps)) = (self.slots[i].as_mut(), self.snapshots.as_mut()) else {
            return;
        };
        s.snapshot_at = None;
        // A sliding-window cache keeps only the last cells: not a whole prefix.
        if self.ctx.kv_cache_seq_pos_min(s.seq) != 0 || s.decoded.len() != s.n_past as usize {
            return;
        }
        let started = Instant::now();
        if let Some(payload) = snapshot::capture(&self.ctx, s.seq) {
            let bytes = payload.len();
            snaps.store(&s.decoded, payload);
            tracing::debug!(model = %self.info.name, slot = i, tokens = s.decoded.len(), bytes, ms = started.elapsed().as_secs_f64() * 1e3, "prefix snapshot taken");
        }
    }

    /// Answer every queued embedding request at once: their inputs share decode calls
    /// as generations share steps.
    fn embed_queued(&mut self) {
        let mut jobs = std::mem::take(&mut self.embeds);
        let queued = jobs.len();
        jobs.retain(|j| !j.tx.is_closed());
        self.active.fetch_sub(queued - jobs.len(), Ordering::SeqCst);
        let inputs: Vec<&[LlamaToken]> = jobs
            .iter()
            .flat_map(|j| j.inputs.iter().map(Vec::as_slice))
            .collect();
        let mut result = self.embed(&inputs);
        self.leave_shares_if_idle();
        for job in jobs {
            let vectors = match &mut result {
                Ok(all) => Ok(all.drain(..job.inputs.len()).collect()),
                Err(e) => Err(e.clone()),
            };
            let _ = job.tx.send(vectors);
            self.active.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn embed(&mut self, inputs: &[&[LlamaToken]]) -> Result<Vec<Vec<f32>>, EngineError> {
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
            self.counters.decode_calls.fetch_add(1, Ordering::Relaxed);
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
        prompt_sources: PromptSources {
            computed: s.job.tokens.len() - s.cached,
            ..s.sources
        },
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

/// A context's raw pointer, for the one call llama-cpp-2 0.1.160 does not wrap
/// (`llama_set_n_threads`). The crate keeps the pointer private but its `Debug` prints
/// it (`LlamaContext { context: 0x… }`); llama.cpp then confirms it by reporting the
/// threads the context was made with. `None` when either does not hold (another
/// llama-cpp-2 version): the threads stay fixed.
fn raw_context(ctx: &LlamaContext, threads: i32) -> Option<*mut llama_cpp_sys_2::llama_context> {
    let text = format!("{ctx:?}");
    let hex = text
        .strip_prefix("LlamaContext { context: 0x")?
        .strip_suffix(" }")?;
    let raw = usize::from_str_radix(hex, 16).ok()? as *mut llama_cpp_sys_2::llama_context;
    // SAFETY: the address is the live context's own pointer, as llama-cpp-2 prints it;
    // reading its thread count has no side effect.
    let made_with = unsafe { llama_cpp_sys_2::llama_n_threads(raw) };
    (made_with == threads).then_some(raw)
}
