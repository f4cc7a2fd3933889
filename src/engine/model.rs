//! A loaded model: the shared `LlamaModel` (tokenizer, template) plus the channel to
//! its worker thread. `Model` is a cheap handle; the worker and the weights live until
//! the last handle is dropped, so a request in flight keeps its model alive.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use serde::Serialize;
use tokio::sync::mpsc as tmpsc;

use super::backend::backend;
use super::error::EngineError;
use super::request::{ChatMessage, GenerateRequest, Prompt, SamplingParams, ToolChoice};
use super::stream::Generation;
use super::template::{ChatTemplate, TemplateInfo, choose_template};
use super::tools::{ToolGrammar, tool_grammar};
use super::worker::{Command, EmbedJob, Job, ToolParse, Worker};

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
    pub threads: Option<i32>,
    /// Load for embeddings (pooled vectors) instead of text generation.
    pub embeddings: bool,
    /// Layers offloaded to a GPU when llama.cpp was built with one.
    pub gpu_layers: u32,
    /// Jinja chat template used instead of the GGUF's (a score's `template = …`).
    pub chat_template: Option<String>,
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
            chat_template: None,
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
    /// Bytes of the KV cache (f16 keys and values for every cell).
    pub kv_bytes: u64,
    /// Bytes of logits and compute buffers (estimate; llama.cpp does not report it).
    pub compute_bytes: u64,
    pub load_ms: f64,
}

impl ModelInfo {
    /// Total resident bytes: weights + KV cache + compute buffers.
    pub fn footprint(&self) -> u64 {
        self.weight_bytes + self.kv_bytes + self.compute_bytes
    }
}

/// KV cache bytes for `n_ctx` cells (f16 keys and values).
pub fn kv_cache_bytes(n_layer: u64, n_ctx: u64, n_embd: u64, n_head: u64, n_head_kv: u64) -> u64 {
    let head_dim = n_embd / n_head.max(1);
    let kv_per_cell = 2 * head_dim * n_head_kv * 2; // keys + values, f16
    n_layer * n_ctx * kv_per_cell
}

/// Logits and compute buffers: the output buffer holds `batch` rows of logits; the
/// graph's scratch is dominated by a few activations of `batch x (n_embd, n_ff, vocab)`.
pub fn compute_buffer_bytes(n_vocab: u64, n_embd: u64, batch: u64, n_ctx: u64) -> u64 {
    let logits = n_vocab * batch.min(512) * 4;
    let scratch = batch.min(512) * (n_embd * 8 + n_vocab) * 4;
    let attn = batch.min(512) * n_ctx.min(8192) * 4;
    logits + scratch + attn + (16 << 20)
}

pub(crate) struct Inner {
    pub(crate) llama: Arc<LlamaModel>,
    pub(crate) info: ModelInfo,
    /// Compiled once at load.
    template: Arc<ChatTemplate>,
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) active: Arc<AtomicUsize>,
    next_id: AtomicU64,
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
    crate::synth::read_header(path).is_ok_and(|h| {
        let arch = h.architecture().unwrap_or("llama").to_owned();
        h.get_u64(&format!("{arch}.pooling_type")).is_some()
    })
}

fn check_file(path: &Path) -> Result<(), EngineError> {
    if !path.exists() {
        return Err(EngineError::MissingFile(path.to_path_buf()));
    }
    crate::synth::read_header(path).map_err(|e| EngineError::BadModel {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(())
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
        mut progress: impl FnMut(f32) + Send + 'static,
    ) -> Result<Model, EngineError> {
        let path = path.as_ref().to_path_buf();
        check_file(&path)?;
        let started = Instant::now();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        let options = options.clone();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let thread_name = format!("model-{name}");
        let name_for_errors = name.clone();
        let active = Arc::new(AtomicUsize::new(0));
        let worker_active = active.clone();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                // LlamaModelParams is not Send: build it on the thread that loads.
                let params = LlamaModelParams::default()
                    .with_n_gpu_layers(options.gpu_layers)
                    .with_progress_callback(move |p| {
                        progress(p);
                        true
                    });
                let llama = match LlamaModel::load_from_file(backend(), &path, &params) {
                    Ok(m) => Arc::new(m),
                    Err(_) => {
                        let _ = ready_tx.send(Err(EngineError::LoadFailed(path)));
                        return;
                    }
                };
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
                    .with_kv_unified(false)
                    .with_embeddings(options.embeddings);
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
                let ctx = match llama.new_context(backend(), cparams) {
                    Ok(c) => c,
                    Err(_) => {
                        let _ = ready_tx.send(Err(EngineError::ContextFailed { path, n_ctx }));
                        return;
                    }
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
                    kv_bytes: if options.embeddings {
                        0
                    } else {
                        kv_cache_bytes(
                            llama.n_layer() as u64,
                            real_ctx as u64,
                            llama.n_embd() as u64,
                            llama.n_head() as u64,
                            llama.n_head_kv() as u64,
                        )
                    },
                    compute_bytes: compute_buffer_bytes(
                        llama.n_vocab() as u64,
                        llama.n_embd() as u64,
                        batch as u64,
                        real_ctx as u64,
                    ),
                    load_ms: started.elapsed().as_secs_f64() * 1e3,
                };
                let _ = ready_tx.send(Ok((llama.clone(), info.clone(), Arc::new(template.0))));
                Worker::new(&llama, ctx, info, worker_active).run(rx);
            })
            .expect("spawning a model worker thread");
        let (llama, info, template) = ready_rx
            .recv()
            .map_err(|_| EngineError::Stopped(name_for_errors.clone()))??;
        tracing::info!(model = %info.name, ms = info.load_ms, "model loaded");
        Ok(Model {
            inner: Arc::new(Inner {
                llama,
                info,
                template,
                tx,
                active,
                next_id: AtomicU64::new(1),
            }),
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

    /// Whether two handles share one loaded model.
    pub fn same_as(&self, other: &Model) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
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
    pub fn detokenize(&self, tokens: &[i32]) -> String {
        let vocab = self.inner.llama.vocab();
        let mut bytes = Vec::new();
        for &t in tokens {
            bytes.extend(vocab.token_to_piece(LlamaToken(t), true, None));
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
        let mut text = self.render_prompt(&request)?;
        let vocab = self.inner.llama.vocab();
        let add_bos = vocab.should_add_bos();
        // Templates that print `bos_token` themselves would double it.
        if add_bos
            && matches!(request.prompt, Prompt::Chat(_))
            && let Some(bos) = token_text(&self.inner.llama, vocab.bos())
            && !bos.is_empty()
            && text.starts_with(&bos)
        {
            text.drain(..bos.len());
        }
        let tokens = vocab.tokenize(text.as_bytes(), add_bos, true);
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
            tx,
            submitted: Instant::now(),
        };
        self.inner.active.fetch_add(1, Ordering::SeqCst);
        if self
            .inner
            .tx
            .send(Command::Generate(Box::new(job)))
            .is_err()
        {
            self.inner.active.fetch_sub(1, Ordering::SeqCst);
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
    if token.0 < 0 {
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
