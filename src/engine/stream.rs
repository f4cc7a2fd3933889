//! The caller's side of a generation: a stream of text chunks ending in a
//! [`Completion`]. Dropping a [`Generation`] cancels it — the worker sees the closed
//! channel at its next step and frees the slot and its KV cells.

use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use super::error::EngineError;

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model emitted an end-of-generation token.
    Stop,
    /// A stop string appeared (it is not part of the text).
    StopString,
    /// `max_tokens` or the request's context was reached.
    Length,
    /// The model called tools (see [`Completion::tool_calls`]).
    ToolCalls,
}

impl FinishReason {
    /// The OpenAI `finish_reason` value.
    pub fn as_openai(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::StopString => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

/// How fast a generation went.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Waiting for a free slot.
    pub queued_ms: f64,
    /// From submission to the first generated token (includes the queue and prompt).
    pub ttft_ms: f64,
    /// Prompt processing speed.
    pub prompt_tok_s: f64,
    /// Decode speed after the first token.
    pub decode_tok_s: f64,
    pub total_ms: f64,
    /// Mean gap between consecutive tokens.
    pub gap_mean_ms: f64,
    /// Standard deviation of those gaps (the raw material of *swing*).
    pub gap_std_ms: f64,
}

/// Where a request's prompt tokens came from: its slot's cache, a prefix snapshot in
/// host memory or on disk, or computed (prefilled) now. The four add up to the prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PromptSources {
    pub slot: usize,
    pub ram: usize,
    pub disk: usize,
    pub computed: usize,
}

impl PromptSources {
    /// All `prompt` tokens computed (nothing cached).
    pub fn computed(prompt: usize) -> Self {
        Self {
            computed: prompt,
            ..Self::default()
        }
    }

    /// Tokens that were not computed.
    pub fn reused(&self) -> usize {
        self.slot + self.ram + self.disk
    }
}

/// The end of a generation.
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens not decoded again: from the slot's prompt cache or a prefix
    /// snapshot (`prompt_sources` says which).
    pub cached_tokens: usize,
    /// Where the prompt tokens came from.
    pub prompt_sources: PromptSources,
    pub completion_tokens: usize,
    pub timings: Timings,
    /// Tool calls parsed from the answer (then `text` holds only the rest).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<super::ToolCall>,
}

/// One thing the worker reports.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// New text (never a partial UTF-8 character, never part of a stop string).
    Text(String),
    Done(Completion),
    Failed(EngineError),
}

/// Sees every item of a generation as its reader takes it, on the reader's thread
/// (the stage counts tokens and tempo per instrument this way). Dropped with the
/// [`Generation`]: a drop before `Done` or `Failed` means the generation was cancelled.
pub trait GenerationObserver: Send {
    fn item(&mut self, item: &StreamItem);
}

/// A running generation.
pub struct Generation {
    id: u64,
    rx: UnboundedReceiver<StreamItem>,
    observer: Option<Box<dyn GenerationObserver>>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("id", &self.id)
            .field("observed", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl Generation {
    pub(crate) fn new(id: u64, rx: UnboundedReceiver<StreamItem>) -> Self {
        Self {
            id,
            rx,
            observer: None,
        }
    }

    /// This generation with `observer` watching what is read from it (replacing any
    /// earlier observer).
    pub fn observed(mut self, observer: impl GenerationObserver + 'static) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    fn seen(&mut self, item: Option<StreamItem>) -> Option<StreamItem> {
        if let (Some(o), Some(i)) = (self.observer.as_mut(), item.as_ref()) {
            o.item(i);
        }
        item
    }

    /// Request id, unique per model.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next chunk, or `None` after the end.
    pub async fn next(&mut self) -> Option<StreamItem> {
        let item = self.rx.recv().await;
        self.seen(item)
    }

    /// Like [`Generation::next`], for threads outside an async runtime.
    pub fn blocking_next(&mut self) -> Option<StreamItem> {
        let item = self.rx.blocking_recv();
        self.seen(item)
    }

    /// Wait for the whole answer, calling `on_text` for each chunk.
    pub async fn finish_with(
        mut self,
        mut on_text: impl FnMut(&str),
    ) -> Result<Completion, EngineError> {
        while let Some(item) = self.next().await {
            match item {
                StreamItem::Text(t) => on_text(&t),
                StreamItem::Done(c) => return Ok(c),
                StreamItem::Failed(e) => return Err(e),
            }
        }
        Err(EngineError::Stopped("worker".into()))
    }

    /// Wait for the whole answer.
    pub async fn finish(self) -> Result<Completion, EngineError> {
        self.finish_with(|_| {}).await
    }

    /// Blocking version of [`Generation::finish_with`].
    pub fn blocking_finish_with(
        mut self,
        mut on_text: impl FnMut(&str),
    ) -> Result<Completion, EngineError> {
        while let Some(item) = self.blocking_next() {
            match item {
                StreamItem::Text(t) => on_text(&t),
                StreamItem::Done(c) => return Ok(c),
                StreamItem::Failed(e) => return Err(e),
            }
        }
        Err(EngineError::Stopped("worker".into()))
    }
}
