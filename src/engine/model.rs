//! A loaded model: the shared `LlamaModel` (tokenizer, template) plus the channel to
//! its worker thread. `Model` is a cheap handle; the worker and the weights live until
//! the last handle is dropped, so a request in flight keeps its model alive.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc as tmpsc;

use super::backend::backend;
use super::error::EngineError;
use super::request::{ChatMessage, GenerateRequest, Prompt, SamplingParams, ToolChoice};
use super::snapshot::{Layout, SnapshotOptions, Snapshots};
use super::stream::Generation;
use super::template::{ChatTemplate, TemplateInfo, choose_template};
use super::tools::{ToolGrammar, tool_grammar};
use super::worker::{Command, DecodeCounters, DecodeStats, EmbedJob, Job, ToolParse, Worker};

/// How to load a model.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LoadOptions {
    /// Tokens one request may use (prompt + answer). 0: the model's training context,
    /// at most 4096.
    pub context: u32,
    /// Requests decoded together in one batch (continuous batching slots).
    pub slots: u32,
    /// Most tokens llama.cpp decodes in one call (prompt chunks are split to fit).
    pub batch: u32,
    /// CPU threads; `None`: every core (one for tiny models, see [`threads_for`]).
    /// Never more than the cores, and shared with the models decoding at the same
    /// time (see [`Cores`](super::Cores)).
    pub threads: Option<i32>,
    /// Load for embeddings (pooled vectors) instead of text generation.
    pub embeddings: bool,
    /// Layers offloaded to a GPU when llama.cpp was built with one.
    pub gpu_layers: u32,
    /// Jinja chat template used instead of the GGUF's (a score's `template = …`).
    pub chat_template: Option<String>,
    /// Prefix snapshots of long prompts (RAM and disk), reused across sessions,
    /// slots, reloads and restarts.
    pub snapshots: SnapshotOptions,
    /// How the KV cache stores keys and values: f16 (llama.cpp's default), or q8_0 at
    /// about half the memory (what lets a small machine give an agent a 32k context).
    #[serde(default)]
    pub kv_cache: KvCache,
    /// Models loaded with the same group (a stage gives its band one) that share a
    /// GGUF and the per-request context decode each other's requests when that lets
    /// them batch (`Model::batch_partner`). `None`: only its own worker decodes.
    #[serde(skip)]
    pub batch_group: Option<u64>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            context: 0,
            slots: 4,
            batch: 512,
            threads: None,
            embeddings: false,
            gpu_layers: 999,
            kv_cache: KvCache::F16,
            chat_template: None,
            snapshots: SnapshotOptions::default(),
            batch_group: None,
        }
    }
}

/// What a model is and what its load really took.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// File stem, used in logs and errors.
    pub name: String,
    pub path: PathBuf,
    pub description: String,
    pub n_params: u64,
    pub n_vocab: i32,
    pub n_embd: i32,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_ctx_train: u32,
    /// Tokens one request may use.
    pub context: u32,
    pub slots: u32,
    /// KV cells of the whole context (`context` per slot).
    pub n_ctx: u32,
    pub batch: u32,
    pub embeddings: bool,
    /// The GGUF's own `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// The template prompts are rendered with, and why.
    pub template: TemplateInfo,
    /// Bytes of tensor data (what llama.cpp maps).
    pub weight_bytes: u64,
    /// Whether the weights were already loaded for another model of the same file
    /// and are shared with it (llama.cpp did not load them again).
    pub weights_shared: bool,
    /// Bytes of the KV cache: what llama.cpp reported allocating when `kv_measured`,
    /// else [`kv_cache_bytes`] of the real context.
    pub kv_bytes: u64,
    pub kv_measured: bool,
    /// Bytes of the compute (graph) and output (logits) buffers: what llama.cpp
    /// reported allocating when `compute_measured`, else [`compute_buffer_bytes`].
    pub compute_bytes: u64,
    pub compute_measured: bool,
    pub load_ms: f64,
}

impl ModelInfo {
    /// Total resident bytes: weights + KV cache + compute buffers.
    pub fn footprint(&self) -> u64 {
        self.weight_bytes + self.kv_bytes + self.compute_bytes
    }
}

/// The attention shape a KV cache is sized by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KvShape {
    pub n_layer: u64,
    pub n_head_kv: u64,
    /// Width of one key head: `{arch}.attention.key_length` where the GGUF has it
    /// (Gemma 3's heads are 256 wide, not `n_embd / n_head`), else `n_embd / n_head`.
    pub key_length: u64,
    /// Width of one value head (`{arch}.attention.value_length`, same fallback).
    pub value_length: u64,
}

impl KvShape {
    /// From a model's `{arch}.*` metadata, read through `key` (`"block_count"`,
    /// `"attention.head_count_kv"`, ...).
    pub fn from_metadata(key: impl Fn(&str) -> Option<u64>) -> KvShape {
        let n_embd = key("embedding_length").unwrap_or(1);
        let n_head = key("attention.head_count").unwrap_or(1).max(1);
        let head_dim = n_embd / n_head;
        KvShape {
            n_layer: key("block_count").unwrap_or(1),
            n_head_kv: key("attention.head_count_kv").unwrap_or(n_head),
            key_length: key("attention.key_length").unwrap_or(head_dim),
            value_length: key("attention.value_length").unwrap_or(head_dim),
        }
    }
}

/// The element type of the KV cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvCache {
    /// 2 bytes per element: llama.cpp's default.
    #[default]
    F16,
    /// 8-bit blocks of 32 elements with an f16 scale (34 bytes per 32): about half of
    /// f16, with a small loss (llama.cpp's `-ctk q8_0 -ctv q8_0`).
    Q8_0,
}

impl KvCache {
    /// As scores write it: `"f16"`, `"q8_0"`.
    pub fn parse(s: &str) -> Option<KvCache> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Some(KvCache::F16),
            "q8_0" | "q8" => Some(KvCache::Q8_0),
            _ => None,
        }
    }

    /// Bytes of `elements` values (a multiple of 32 for q8_0, as KV rows are).
    pub fn bytes(self, elements: u64) -> u64 {
        match self {
            KvCache::F16 => elements * 2,
            KvCache::Q8_0 => elements.div_ceil(32) * 34,
        }
    }

    fn llama(self) -> KvCacheType {
        match self {
            KvCache::F16 => KvCacheType::F16,
            KvCache::Q8_0 => KvCacheType::Q8_0,
        }
    }
}

/// KV cache bytes for `n_ctx` cells: f16 keys and values in every layer. Layers with a
/// sliding window (Gemma 3) get full-size caches too: the engine keeps llama.cpp's
/// default `swa_full`, so a slot's cached prefix stays reusable past the window.
pub fn kv_cache_bytes(shape: &KvShape, n_ctx: u64) -> u64 {
    kv_cache_bytes_as(shape, n_ctx, KvCache::F16)
}

/// [`kv_cache_bytes`] with keys and values stored as `kv`.
pub fn kv_cache_bytes_as(shape: &KvShape, n_ctx: u64, kv: KvCache) -> u64 {
    let row = |len: u64| kv.bytes(shape.n_head_kv * len);
    shape.n_layer * n_ctx * (row(shape.key_length) + row(shape.value_length))
}

/// The KV shape of a loaded model, from llama.cpp's view of its metadata.
fn kv_shape_of(llama: &LlamaModel) -> KvShape {
    KvShape::from_metadata(|k| arch_u64(llama, k))
}

/// An integer `{arch}.{key}` of a loaded model's metadata.
fn arch_u64(llama: &LlamaModel, key: &str) -> Option<u64> {
    let arch = llama
        .meta_val_str("general.architecture")
        .unwrap_or_default();
    let value = llama.meta_val_str(&format!("{arch}.{key}")).ok()?;
    value.trim().parse().ok()
}

/// Compute and output buffers, estimated: llama.cpp sizes its graph scratch for one
/// full micro-batch (`batch` rows, at most `n_ctx`), whose f32 logits dominate, plus
/// the FFN and residual activations; the output buffer holds a row of logits per
/// slot. Within a few percent above what llama.cpp reported for Qwen2.5 0.5B and
/// Gemma 3 270M (flash attention on, as llama.cpp picks it on CPU).
pub fn compute_buffer_bytes(
    n_vocab: u64,
    n_embd: u64,
    n_ff: u64,
    batch: u64,
    n_ctx: u64,
    slots: u64,
) -> u64 {
    let rows = batch.min(n_ctx).max(1);
    let logits = rows * n_vocab * 4;
    let activations = rows * (2 * n_ff + 6 * n_embd) * 4;
    let outputs = slots.max(1) * n_vocab * 4;
    logits + activations + outputs
}

pub(crate) struct Inner {
    pub(crate) llama: Arc<LlamaModel>,
    pub(crate) info: ModelInfo,
    /// Compiled once at load.
    template: Arc<ChatTemplate>,
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) active: Arc<AtomicUsize>,
    /// What the worker has decoded, and with how many threads.
    counters: Arc<DecodeCounters>,
    next_id: AtomicU64,
    /// Prefix snapshots of this model; `None`: off (or an embedding model).
    snapshots: Option<SnapshotOptions>,
    /// [`LoadOptions::batch_group`].
    batch_group: Option<u64>,
}

/// Every loaded model, to find the ones that share weights with a given one.
static LOADED: std::sync::Mutex<Vec<std::sync::Weak<Inner>>> = std::sync::Mutex::new(Vec::new());

fn loaded() -> std::sync::MutexGuard<'static, Vec<std::sync::Weak<Inner>>> {
    LOADED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A loaded model. Clone it freely: clones share one worker.
#[derive(Clone)]
pub struct Model {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.inner.info.name)
            .finish()
    }
}

/// Whether the GGUF names its own pooling type (`{arch}.pooling_type`).
fn declares_pooling(path: &Path) -> bool {
    crate::gguf::read_header(path).is_ok_and(|h| {
        let arch = h.architecture().unwrap_or("llama").to_owned();
        h.get_u64(&format!("{arch}.pooling_type")).is_some()
    })
}

impl Model {
    /// Load a GGUF file (memory-mapped) and start its worker thread. Blocks until the
    /// model and its context are ready.
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Model, EngineError> {
        Self::load_with_progress(path, options, |_| {})
    }

    /// [`Model::load`], reporting llama.cpp's load progress (0.0 to 1.0) as it goes.
    pub fn load_with_progress(
        path: impl AsRef<Path>,
        options: &LoadOptions,
        progress: impl FnMut(f32) + Send + 'static,
    ) -> Result<Model, EngineError> {
        let path = path.as_ref().to_path_buf();
        // A damaged file must never reach llama.cpp in this process: validated, and
        // test-loaded in a child process the first time it is seen.
        super::probe::check(&path, options)?;
        let started = Instant::now();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        let batch_group = options.batch_group;
        let options = options.clone();
        let snapshot_options = (!options.embeddings && options.snapshots.min_tokens > 0)
            .then(|| options.snapshots.clone());
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let thread_name = format!("model-{name}");
        let name_for_errors = name.clone();
        let active = Arc::new(AtomicUsize::new(0));
        let worker_active = active.clone();
        let counters = Arc::new(DecodeCounters::default());
        let worker_counters = counters.clone();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                // Instruments naming the same file share one copy of its weights.
                let weights = match super::weights::load_shared(
                    &path,
                    options.gpu_layers,
                    progress,
                ) {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let llama = weights.llama.clone();
                let n_ctx_train = llama.n_ctx_train().max(1);
                let context = if options.context == 0 {
                    n_ctx_train.min(4096)
                } else {
                    options.context
                };
                let slots = options.slots.max(1);
                let (n_ctx, batch) = if options.embeddings {
                    // Non-causal models need a whole sequence in one micro-batch.
                    let n = context.max(64);
                    (n, n)
                } else {
                    (context * slots, options.batch.max(32))
                };
                let threads = options
                    .threads
                    .unwrap_or_else(|| threads_for(llama.n_params()));
                let mut cparams = LlamaContextParams::default()
                    .with_n_ctx(NonZeroU32::new(n_ctx))
                    .with_n_batch(batch)
                    .with_n_ubatch(batch)
                    .with_n_seq_max(slots)
                    .with_n_threads(threads)
                    .with_n_threads_batch(threads)
                    // One KV stream per slot: attention then reads only the request's
                    // own cells (a unified cache made every token attend over all
                    // slots' cells, masked: twice the attention work at 8 streams).
                    // Embeddings need the unified one: with a stream per sequence
                    // llama.cpp splits a batch into equal parts per sequence, so a
                    // longer input's tokens land in several micro-batches and its
                    // pooled vector comes out wrong.
                    .with_kv_unified(options.embeddings)
                    .with_embeddings(options.embeddings)
                    .with_type_k(options.kv_cache.llama())
                    .with_type_v(options.kv_cache.llama());
                if options.embeddings {
                    // Use the pooling the GGUF declares (BERT-style embedding models do);
                    // a model without one (a llama chat model) is mean-pooled.
                    let pooling = if declares_pooling(&path) {
                        LlamaPoolingType::Unspecified
                    } else {
                        LlamaPoolingType::Mean
                    };
                    cparams = cparams.with_pooling_type(pooling);
                }
                // Everything that shapes a slot's KV cells: a snapshot is only ever
                // loaded into a context that agrees on all of it.
                let kv_layout = format!(
                    "context={context} slots={slots} n_ctx={n_ctx} flash_attn={:?} type_k={:?} type_v={:?} swa_full={}",
                    cparams.flash_attention_policy(),
                    cparams.type_k(),
                    cparams.type_v(),
                    cparams.swa_full(),
                );
                // What llama.cpp really allocated, read as it creates the context.
                let (ctx, allocated) = super::alloc::measure(|| {
                    let _one_at_a_time = weights
                        .new_context
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    llama.new_context(backend(), cparams)
                });
                // `.ok()` consumes the result whole: no half-moved value borrows the
                // weights until the end of the thread.
                let Some(ctx) = ctx.ok() else {
                    let _ = ready_tx.send(Err(EngineError::ContextFailed { path, n_ctx }));
                    return;
                };
                let real_ctx = ctx.n_ctx();
                let gguf_template = llama
                    .chat_template(None)
                    .ok()
                    .and_then(|t| t.to_string().ok());
                let template =
                    match load_template(&llama, &name, &options, gguf_template.as_deref()) {
                        Ok(t) => t,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                let info = ModelInfo {
                    name: name.clone(),
                    path: path.clone(),
                    description: llama
                        .meta_val_str("general.name")
                        .unwrap_or_else(|_| name.clone()),
                    n_params: llama.n_params(),
                    n_vocab: llama.n_vocab(),
                    n_embd: llama.n_embd(),
                    n_layer: llama.n_layer(),
                    n_head: llama.n_head(),
                    n_head_kv: llama.n_head_kv(),
                    n_ctx_train,
                    context: context.min(real_ctx),
                    slots,
                    n_ctx: real_ctx,
                    batch,
                    embeddings: options.embeddings,
                    chat_template: gguf_template,
                    template: template.1.clone(),
                    weight_bytes: llama.size(),
                    weights_shared: weights.reused,
                    kv_bytes: allocated.kv.unwrap_or_else(|| {
                        if options.embeddings {
                            0
                        } else {
                            kv_cache_bytes_as(
                                &kv_shape_of(&llama),
                                real_ctx as u64,
                                options.kv_cache,
                            )
                        }
                    }),
                    kv_measured: allocated.kv.is_some(),
                    compute_bytes: allocated.compute.unwrap_or_else(|| {
                        let n_ff = arch_u64(&llama, "feed_forward_length")
                            .unwrap_or(4 * llama.n_embd() as u64);
                        compute_buffer_bytes(
                            llama.n_vocab() as u64,
                            llama.n_embd() as u64,
                            n_ff,
                            batch as u64,
                            real_ctx as u64,
                            slots as u64,
                        )
                    }),
                    compute_measured: allocated.compute.is_some(),
                    load_ms: started.elapsed().as_secs_f64() * 1e3,
                };
                let _ = ready_tx.send(Ok((llama.clone(), info.clone(), Arc::new(template.0))));
                let snapshots = if options.embeddings {
                    None
                } else {
                    Snapshots::new(&options.snapshots, Layout::new(&path, &kv_layout), &name)
                };
                Worker::new(&llama, ctx, info, worker_active)
                    .with_snapshots(snapshots)
                    .with_threads(threads, worker_counters)
                    .run(rx);
                // The context is gone; the weights too unless another holder shares them.
                drop(llama);
                super::backend::release_freed_memory();
            })
            .expect("spawning a model worker thread");
        let (llama, info, template) = ready_rx
            .recv()
            .map_err(|_| EngineError::Stopped(name_for_errors.clone()))??;
        tracing::info!(model = %info.name, ms = info.load_ms, "model loaded");
        let inner = Arc::new(Inner {
            llama,
            info,
            template,
            tx,
            active,
            counters,
            next_id: AtomicU64::new(1),
            snapshots: snapshot_options,
            batch_group,
        });
        let mut all = loaded();
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&inner));
        Ok(Model { inner })
    }

    /// Another loaded model whose worker can take this one's next request into the
    /// batch it is decoding: one of the same [`LoadOptions::batch_group`] that shares
    /// these weights (one GGUF, see
    /// [`Model::shares_weights_with`]) and the per-request context, is decoding now
    /// and has a free slot — while this model's own worker is idle.
    ///
    /// Why: two instruments on one GGUF playing at once (a band's comping players)
    /// would otherwise decode in two contexts on a share of the cores each, one
    /// sequence per step; in one context the two sequences share each step's pass over
    /// the weights. On Qwen2.5-Coder-0.5B on 2 cores, 4 streams in one context decode
    /// 56 tok/s against ~11 tok/s for each of two one-core contexts. The request is
    /// built here (this model's template, sampling, tools), so only where it decodes
    /// changes, not what it says.
    fn batch_partner(&self) -> Option<Arc<Inner>> {
        let me = &self.inner;
        if me.batch_group.is_none() || me.info.embeddings || me.active.load(Ordering::SeqCst) > 0 {
            return None;
        }
        loaded()
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .find(|o| {
                !Arc::ptr_eq(o, me)
                    && o.batch_group == me.batch_group
                    && Arc::ptr_eq(&o.llama, &me.llama)
                    && o.info.context == me.info.context
                    && !o.info.embeddings
                    && (1..o.info.slots as usize).contains(&o.active.load(Ordering::SeqCst))
            })
    }

    /// Load on a blocking thread, for async callers.
    pub async fn load_async(path: PathBuf, options: LoadOptions) -> Result<Model, EngineError> {
        tokio::task::spawn_blocking(move || Model::load(path, &options))
            .await
            .unwrap_or_else(|e| Err(EngineError::Stopped(e.to_string())))
    }

    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    pub fn name(&self) -> &str {
        &self.inner.info.name
    }

    /// Requests queued or decoding right now.
    pub fn active_requests(&self) -> usize {
        self.inner.active.load(Ordering::SeqCst)
    }

    /// llama.cpp decode calls so far, and the threads they ran with (models decoding
    /// at once share the cores, see [`Cores`](super::Cores)).
    pub fn decode_stats(&self) -> DecodeStats {
        self.inner.counters.snapshot()
    }

    /// Whether two handles share one loaded model.
    pub fn same_as(&self, other: &Model) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Whether two models (each with its own context and worker) use one loaded copy
    /// of their weights.
    pub fn shares_weights_with(&self, other: &Model) -> bool {
        Arc::ptr_eq(&self.inner.llama, &other.inner.llama)
    }

    /// Identifies the loaded copy of the weights: equal for models that share them.
    pub fn weights_id(&self) -> usize {
        Arc::as_ptr(&self.inner.llama) as usize
    }

    /// Wait until every prefix snapshot this model took is written to its folder.
    pub fn flush_snapshots(&self) {
        if let Some(o) = &self.inner.snapshots {
            super::snapshot::flush(&o.folder());
        }
    }

    /// Tokenize text; special tokens (`<|im_start|>`) are parsed.
    pub fn tokenize(&self, text: &str, add_bos: bool) -> Vec<i32> {
        self.inner
            .llama
            .vocab()
            .tokenize(text.as_bytes(), add_bos, true)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    /// The text of tokens, special tokens included.
    ///
    /// An id outside the vocabulary (a score can pass any number) becomes U+FFFD:
    /// llama.cpp would throw a C++ exception on it, which aborts a Rust process.
    pub fn detokenize(&self, tokens: &[i32]) -> String {
        let vocab = self.inner.llama.vocab();
        let n_vocab = self.inner.llama.n_vocab();
        let mut bytes = Vec::new();
        for &t in tokens {
            if (0..n_vocab).contains(&t) {
                bytes.extend(vocab.token_to_piece(LlamaToken(t), true, None));
            } else {
                bytes.extend("\u{FFFD}".as_bytes());
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Render chat messages with the model's chat template (no tools).
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        self.inner.template.render(messages, &[], true)
    }

    /// The prompt text a request puts before the answer: its messages (and tools,
    /// unless `tool_choice` is `none`) rendered through the chat template, or the raw
    /// text as given.
    pub fn render_prompt(&self, request: &GenerateRequest) -> Result<String, EngineError> {
        match &request.prompt {
            Prompt::Chat(messages) => {
                let tools = if request.tool_choice == ToolChoice::None {
                    &[][..]
                } else {
                    &request.tools[..]
                };
                self.inner.template.render(messages, tools, true)
            }
            Prompt::Raw(s) => Ok(s.clone()),
        }
    }

    /// Which chat template this model uses and why.
    pub fn template_info(&self) -> &TemplateInfo {
        &self.inner.info.template
    }

    /// Start a generation. Tokens stream from the returned [`Generation`]; dropping it
    /// cancels the request and frees its slot.
    ///
    /// With `tools` (and `tool_choice` not `none`) the answer's tool calls are
    /// constrained by a grammar, held back from the stream and returned in
    /// [`Completion::tool_calls`](super::Completion) with
    /// [`FinishReason::ToolCalls`](super::FinishReason); the grammar replaces
    /// `sampling.grammar` for such a request.
    pub fn generate(&self, request: GenerateRequest) -> Result<Generation, EngineError> {
        let info = &self.inner.info;
        if info.embeddings {
            return Err(EngineError::EmbeddingOnly(info.name.clone()));
        }
        let text = self.render_prompt(&request)?;
        let vocab = self.inner.llama.vocab();
        let add_bos = vocab.should_add_bos();
        let to_tokens = |mut text: String| {
            // Templates that print `bos_token` themselves would double it.
            if add_bos
                && matches!(request.prompt, Prompt::Chat(_))
                && let Some(bos) = token_text(&self.inner.llama, vocab.bos())
                && !bos.is_empty()
                && text.starts_with(&bos)
            {
                text.drain(..bos.len());
            }
            vocab.tokenize(text.as_bytes(), add_bos, true)
        };
        let tokens = to_tokens(text);
        if tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if tokens.len() + 1 > info.context as usize {
            return Err(EngineError::PromptTooLong {
                model: info.name.clone(),
                prompt: tokens.len(),
                limit: info.context as usize - 1,
            });
        }
        let format = self.inner.template.tool_format();
        let grammar = tool_grammar(
            format,
            &request.tools,
            &request.tool_choice,
            request.parallel_tool_calls,
        )?;
        let tools = grammar.as_ref().map(|_| ToolParse {
            format,
            names: request.tools.iter().map(|t| t.name.clone()).collect(),
            special: format
                .special_markers()
                .iter()
                .filter_map(|m| {
                    let toks = vocab.tokenize(m.as_bytes(), false, true);
                    (toks.len() == 1).then(|| toks[0])
                })
                .collect(),
        });
        let sampler = self.build_sampler(&request.sampling, grammar.as_ref())?;
        // Where to snapshot a long chat: what the next session shares. That is its
        // leading system message(s) with the tools when they are long enough — an
        // agent's preamble, identical in every session, while its first user message
        // already differs per session (OpenClaw stamps the time and the session id
        // there) — else everything before the last message (preamble and history).
        let prefix_hint = match (&request.prompt, &self.inner.snapshots) {
            (Prompt::Chat(messages), Some(o))
                if messages.len() >= 2 && tokens.len() >= o.min_tokens as usize =>
            {
                let tools = if request.tool_choice == ToolChoice::None {
                    &[][..]
                } else {
                    &request.tools[..]
                };
                let shared = |before: &[ChatMessage]| {
                    self.inner
                        .template
                        .render(before, tools, false)
                        .ok()
                        .map(|t| {
                            let head = to_tokens(t);
                            head.iter().zip(&tokens).take_while(|(a, b)| a == b).count()
                        })
                };
                let systems = messages.iter().take_while(|m| m.role == "system").count();
                let preamble = (systems > 0 && systems < messages.len())
                    .then(|| shared(&messages[..systems]))
                    .flatten()
                    .filter(|&n| n >= o.min_tokens as usize);
                preamble.or_else(|| shared(&messages[..messages.len() - 1]))
            }
            _ => None,
        };
        let (tx, rx) = tmpsc::unbounded_channel();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            id,
            tokens,
            sampler,
            max_tokens: request.max_tokens,
            stop: request.stop,
            ignore_eos: request.ignore_eos,
            tools,
            prefix_hint,
            tx,
            submitted: Instant::now(),
        };
        // Decode where this request can share a step (see `batch_partner`).
        let partner = self.batch_partner();
        let runner = partner.as_ref().unwrap_or(&self.inner);
        if partner.is_some() {
            tracing::debug!(model = %info.name, with = %runner.info.name, "request batched with another instrument on the same weights");
        }
        runner.active.fetch_add(1, Ordering::SeqCst);
        if runner.tx.send(Command::Generate(Box::new(job))).is_err() {
            runner.active.fetch_sub(1, Ordering::SeqCst);
            return Err(EngineError::Stopped(info.name.clone()));
        }
        Ok(Generation::new(id, rx))
    }

    /// Pooled, L2-normalised embeddings of each text (the model must be loaded with
    /// `embeddings = true`).
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EngineError> {
        let info = &self.inner.info;
        if !info.embeddings {
            return Err(EngineError::NotAnEmbeddingModel(info.name.clone()));
        }
        let vocab = self.inner.llama.vocab();
        let limit = info.context as usize;
        let mut inputs = Vec::with_capacity(texts.len());
        for t in &texts {
            let mut toks = vocab.tokenize(t.as_bytes(), true, false);
            toks.truncate(limit);
            if toks.is_empty() {
                return Err(EngineError::EmptyPrompt);
            }
            inputs.push(toks);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.active.fetch_add(1, Ordering::SeqCst);
        if self
            .inner
            .tx
            .send(Command::Embed(EmbedJob { inputs, tx }))
            .is_err()
        {
            self.inner.active.fetch_sub(1, Ordering::SeqCst);
            return Err(EngineError::Stopped(info.name.clone()));
        }
        rx.await
            .unwrap_or_else(|_| Err(EngineError::Stopped(info.name.clone())))
    }

    fn build_sampler(
        &self,
        s: &SamplingParams,
        tools: Option<&ToolGrammar>,
    ) -> Result<LlamaSampler, EngineError> {
        let llama = &self.inner.llama;
        let mut chain = Vec::new();
        match tools {
            Some(t) if t.triggers.is_empty() => chain.push(
                LlamaSampler::grammar(llama, &t.gbnf, "root").map_err(|_| EngineError::Grammar)?,
            ),
            Some(t) => chain.push(
                LlamaSampler::grammar_lazy_patterns(llama, &t.gbnf, "root", &t.triggers, &[])
                    .map_err(|_| EngineError::Grammar)?,
            ),
            None => {
                if let Some(g) = &s.grammar {
                    chain.push(
                        LlamaSampler::grammar(llama, g, "root")
                            .map_err(|_| EngineError::Grammar)?,
                    );
                }
            }
        }
        if s.repeat_penalty != 1.0 || s.frequency_penalty != 0.0 || s.presence_penalty != 0.0 {
            chain.push(LlamaSampler::penalties(
                llama.n_vocab(),
                s.repeat_last_n,
                s.repeat_penalty,
                s.frequency_penalty,
                s.presence_penalty,
            ));
        }
        if s.is_greedy() {
            chain.push(LlamaSampler::greedy());
        } else {
            if s.top_k > 0 {
                chain.push(LlamaSampler::top_k(s.top_k));
            }
            if s.top_p < 1.0 {
                chain.push(LlamaSampler::top_p(s.top_p, 1));
            }
            if s.min_p > 0.0 {
                chain.push(LlamaSampler::min_p(s.min_p, 1));
            }
            chain.push(LlamaSampler::temp(s.temperature));
            let seed = s.seed.unwrap_or_else(rand::random);
            chain.push(LlamaSampler::dist(seed));
        }
        Ok(LlamaSampler::chain_simple(chain))
    }
}

/// The text of a special token (`<|begin_of_text|>`), if the vocabulary has one.
fn token_text(llama: &LlamaModel, token: LlamaToken) -> Option<String> {
    // llama.cpp throws (and so aborts us) on an id outside the vocabulary.
    if token.0 < 0 || token.0 >= llama.n_vocab() {
        return None;
    }
    let vocab = llama.vocab();
    vocab
        .text(token)
        .and_then(|t| t.to_str().ok())
        .map(str::to_owned)
}

/// Choose and compile the model's template. A score override that does not compile
/// fails the load; a GGUF template that does not compile falls back to the default.
fn load_template(
    llama: &LlamaModel,
    name: &str,
    options: &LoadOptions,
    gguf: Option<&str>,
) -> Result<(ChatTemplate, TemplateInfo), EngineError> {
    let architecture = llama
        .meta_val_str("general.architecture")
        .unwrap_or_default();
    let vocab = llama.vocab();
    let has_token = |t: &str| {
        let toks = vocab.tokenize(t.as_bytes(), false, true);
        toks.len() == 1 && vocab.is_control(toks[0])
    };
    let (source, origin, reason) = choose_template(
        options.chat_template.as_deref(),
        gguf,
        &architecture,
        &has_token,
    );
    let bos = token_text(llama, vocab.bos()).unwrap_or_default();
    let eos = token_text(llama, vocab.eos()).unwrap_or_default();
    let template = ChatTemplate::new(name, &source, &bos, &eos)?;
    let info = TemplateInfo {
        source: origin,
        reason,
        tool_format: template.tool_format(),
    };
    tracing::info!(model = name, template = %info, "chat template");
    Ok((template, info))
}

/// Threads for llama.cpp: every core the process may use.
pub fn default_threads() -> i32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as i32)
        .unwrap_or(4)
}

/// Threads for a model of `n_params` parameters when the user did not say: every
/// core, except for tiny models (under 20M parameters), where one thread is faster
/// because each step is too short to pay for thread synchronisation.
pub fn threads_for(n_params: u64) -> i32 {
    if n_params < 20_000_000 {
        1
    } else {
        default_threads()
    }
}

/// ChatML, the fallback template for models without one.
pub fn chatml(messages: &[ChatMessage]) -> String {
    let mut s = String::new();
    for m in messages {
        s.push_str("<|im_start|>");
        s.push_str(&m.role);
        s.push('\n');
        s.push_str(&m.content);
        s.push_str("<|im_end|>\n");
    }
    s.push_str("<|im_start|>assistant\n");
    s
}
