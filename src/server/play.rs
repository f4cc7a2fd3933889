//! What a request plays, and playing it: the `model` id names the score's arrangement
//! (`orchestra`), the arrangement forced to a section (`orchestra/<section>`) or one
//! instrument alone. Either way the answer comes back as [`Piece`]s on a channel; the
//! playing task stops (and its generation is cancelled, its slot freed) as soon as the
//! receiver is dropped, which is what happens when a client disconnects.

use serde_json::Value;
use tokio::sync::mpsc;

use super::AppState;
use super::admission::Permit;
use super::error::ApiError;
use super::observe::{Observed, first_token};
use super::openai::Knobs;
use crate::engine::{
    ChatMessage, GenerateRequest, Prompt, SamplingParams, StreamItem, Tool, ToolCall, ToolChoice,
};
use crate::events::EventKind;
use crate::score::{InstrumentHandle, Request};

/// The model id of the score's own arrangement.
pub const ORCHESTRA: &str = "orchestra";

/// What a `model` id plays.
#[derive(Debug, Clone)]
pub enum Target {
    /// The score's `perform`, optionally with the section decided by the client.
    Perform { section: Option<String> },
    /// One instrument, no arrangement.
    Instrument(InstrumentHandle),
}

/// Resolves a `model` id against the current version of the score.
pub async fn resolve(state: &AppState, model: &str) -> Result<Target, ApiError> {
    if model == ORCHESTRA {
        return Ok(Target::Perform { section: None });
    }
    if let Some(section) = model.strip_prefix("orchestra/") {
        let info = state.conductor()?.info().await?;
        if !info.sections.iter().any(|s| s == section) {
            return Err(ApiError::not_found(format!(
                "the score has no section `{section}`: its sections are {}",
                info.sections.join(", ")
            )));
        }
        return Ok(Target::Perform {
            section: Some(section.to_string()),
        });
    }
    match state.conductor()?.instrument(model).await? {
        Some(h) => Ok(Target::Instrument(h)),
        None => {
            let ids = super::models::model_ids(state).await.unwrap_or_default();
            Err(ApiError::not_found(format!(
                "the model `{model}` does not exist: this server plays {}",
                ids.join(", ")
            )))
        }
    }
}

/// The end of an answer.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    pub text: String,
    /// OpenAI's `finish_reason`.
    pub finish_reason: String,
    pub prompt_tokens: usize,
    /// Prompt tokens served from the prompt cache.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    pub tool_calls: Vec<ToolCall>,
    /// The arrangement: section, soloist, trace, score version, request id.
    pub orchestra: Value,
    pub section: Option<String>,
    pub soloist: Option<String>,
    pub score_version: u64,
}

/// One thing the playing task reports.
#[derive(Debug)]
pub enum Piece {
    Text(String),
    Done(Box<Finished>),
    Failed(ApiError),
}

/// What the client asked to be played.
pub struct Job {
    pub target: Target,
    /// The `model` id as the client wrote it (echoed back).
    pub model: String,
    pub prompt: Prompt,
    pub knobs: Knobs,
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    pub parallel_tool_calls: bool,
    /// A GBNF grammar from `response_format`.
    pub grammar: Option<String>,
}

impl Job {
    fn max_tokens(&self) -> Option<u32> {
        self.knobs
            .max_completion_tokens
            .or(self.knobs.max_tokens)
            .map(|n| n.max(1))
    }

    /// The instrument's defaults with the client's overrides.
    fn sampling(&self, base: &SamplingParams) -> SamplingParams {
        let k = &self.knobs;
        let mut s = base.clone();
        if let Some(t) = k.temperature {
            s.temperature = t;
        }
        if let Some(p) = k.top_p {
            s.top_p = p;
        }
        if let Some(x) = k.top_k {
            s.top_k = x;
        }
        if let Some(x) = k.min_p {
            s.min_p = x;
        }
        if let Some(x) = k.repeat_penalty {
            s.repeat_penalty = x;
        }
        if let Some(x) = k.frequency_penalty {
            s.frequency_penalty = x;
        }
        if let Some(x) = k.presence_penalty {
            s.presence_penalty = x;
        }
        if let Some(seed) = k.seed {
            s.seed = Some(seed as u32);
        }
        if self.grammar.is_some() {
            s.grammar = self.grammar.clone();
        }
        s
    }
}

/// Starts playing `job`; the answer arrives on the returned channel. The admission
/// permit is held until the answer ends.
pub fn start(state: &AppState, job: Job, permit: Permit) -> mpsc::Receiver<Piece> {
    let (tx, rx) = mpsc::channel(256);
    let state = state.clone();
    let (mut observed, scope) = Observed::begin(&state, &job.model, job.knobs.stream);
    let mut stop = state.stop.subscribe();
    tokio::spawn(scope.run(async move {
        let _permit = permit;
        let run = async {
            match job.target.clone() {
                Target::Instrument(h) => play_instrument(&state, h, job, &tx).await,
                Target::Perform { section } => perform(&state, section, job, &tx).await,
            }
        };
        tokio::select! {
            res = run => {
                observed.finish(&res);
                let piece = match res {
                    Ok(done) => Piece::Done(Box::new(done)),
                    Err(e) => Piece::Failed(e),
                };
                let _ = tx.send(piece).await;
            }
            // The client went away: dropping `run` cancels the generation.
            _ = tx.closed() => {
                tracing::info!("client disconnected: request cancelled");
            }
            // Stopped by a voice command: dropping `run` cancels the generation.
            _ = stop.changed() => {
                let e = ApiError::unavailable("stopped by a voice command (`stop`)", 1);
                observed.finish(&Err(e.clone()));
                let _ = tx.send(Piece::Failed(e)).await;
            }
        }
    }));
    rx
}

async fn play_instrument(
    state: &AppState,
    h: InstrumentHandle,
    job: Job,
    tx: &mpsc::Sender<Piece>,
) -> Result<Finished, ApiError> {
    if h.embeddings {
        return Err(ApiError::bad_request(format!(
            "`{}` is an embedding model: use /v1/embeddings",
            h.name
        ))
        .with_code("model_not_supported"));
    }
    let prompt = match job.prompt.clone() {
        Prompt::Chat(mut msgs) => {
            if let Some(sys) = &h.system
                && msgs.first().is_none_or(|m| m.role != "system")
            {
                msgs.insert(0, ChatMessage::system(sys.clone()));
            }
            Prompt::Chat(msgs)
        }
        raw => raw,
    };
    let mut request = match prompt {
        Prompt::Chat(m) => GenerateRequest::chat(m),
        Prompt::Raw(s) => GenerateRequest::raw(s),
    }
    .with_sampling(job.sampling(&h.sampling))
    .with_max_tokens(job.max_tokens().unwrap_or(h.max_tokens))
    .with_stop(
        job.knobs
            .stop
            .clone()
            .map(|s| s.into_vec())
            .unwrap_or_default(),
    )
    .with_tools(job.tools.clone(), job.tool_choice.clone())
    .with_ignore_eos(job.knobs.ignore_eos);
    request.parallel_tool_calls = job.parallel_tool_calls;
    // A local instrument's lease (none for a remote one) is held until the end.
    let (_lease, mut generation) = h.generate(request).await?;
    let events = state.conductor()?.events().clone();
    let id = generation.id();
    events.emit(EventKind::GenerationStarted {
        model: h.name.clone(),
        request: id,
    });
    // Reports the end of the generation however it ends — finished, failed, or
    // dropped because the client went away.
    struct Ended {
        events: crate::events::EventBus,
        model: String,
        id: u64,
        tokens: usize,
        tok_s: f64,
    }
    impl Drop for Ended {
        fn drop(&mut self) {
            self.events.emit(EventKind::GenerationFinished {
                model: std::mem::take(&mut self.model),
                request: self.id,
                tokens: self.tokens,
                tok_s: self.tok_s,
            });
        }
    }
    let mut ended = Ended {
        events,
        model: h.name.clone(),
        id,
        tokens: 0,
        tok_s: 0.0,
    };
    let completion = loop {
        match generation.next().await {
            Some(StreamItem::Text(t)) => {
                ended.tokens += 1;
                first_token();
                if tx.send(Piece::Text(t)).await.is_err() {
                    break None;
                }
            }
            Some(StreamItem::Done(c)) => break Some(Ok(c)),
            Some(StreamItem::Failed(e)) => break Some(Err(e)),
            None => break None,
        }
    };
    let completion = match completion {
        Some(Ok(c)) => c,
        Some(Err(e)) => return Err(e.into()),
        None => return Err(ApiError::internal(format!("`{}` stopped", h.name))),
    };
    ended.tokens = completion.completion_tokens;
    ended.tok_s = completion.timings.decode_tok_s;
    drop(ended);
    let version = state.conductor()?.version();
    Ok(Finished {
        text: completion.text.clone(),
        finish_reason: completion.finish_reason.as_openai().to_string(),
        prompt_tokens: completion.prompt_tokens,
        cached_tokens: completion.cached_tokens,
        completion_tokens: completion.completion_tokens,
        tool_calls: completion.tool_calls.clone(),
        orchestra: serde_json::json!({
            "instrument": h.name,
            "section": h.section,
            "score_version": version,
            "timings": completion.timings,
            "prompt_sources": completion.prompt_sources,
        }),
        section: Some(h.section.clone()),
        soloist: Some(h.name.clone()),
        score_version: version,
    })
}

async fn perform(
    state: &AppState,
    section: Option<String>,
    job: Job,
    tx: &mpsc::Sender<Piece>,
) -> Result<Finished, ApiError> {
    if job.grammar.is_some() {
        return Err(ApiError::bad_request(
            "`response_format` is supported when `model` names an instrument; the arrangement (`orchestra`) answers in text",
        ));
    }
    let messages = match job.prompt.clone() {
        Prompt::Chat(m) => m,
        Prompt::Raw(s) => vec![ChatMessage::user(s)],
    };
    let request = Request {
        messages,
        model: Some(job.model.clone()),
        max_tokens: job.max_tokens(),
        temperature: job.knobs.temperature,
        stream: job.knobs.stream,
        section,
        tools: job.tools.clone(),
        tool_choice: job.tool_choice.clone(),
    };
    let (sink, mut written) = mpsc::unbounded_channel::<String>();
    let performing = state.conductor()?.perform_streaming(request, sink);
    tokio::pin!(performing);
    let answer = loop {
        tokio::select! {
            biased;
            Some(text) = written.recv() => {
                first_token();
                if tx.send(Piece::Text(text)).await.is_err() {
                    return Err(ApiError::internal("client gone"));
                }
            }
            res = &mut performing => break res?,
        }
    };
    while let Ok(text) = written.try_recv() {
        let _ = tx.send(Piece::Text(text)).await;
    }
    let data = &answer.data;
    let str_of = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_string);
    let tool_calls: Vec<ToolCall> = data
        .get("tool_calls")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let finish_reason = str_of("finish_reason").unwrap_or_else(|| {
        if tool_calls.is_empty() {
            "stop".into()
        } else {
            "tool_calls".into()
        }
    });
    let section = str_of("section");
    let soloist = str_of("player");
    Ok(Finished {
        text: answer.text.clone(),
        finish_reason,
        prompt_tokens: answer.usage.prompt_tokens,
        cached_tokens: answer.usage.cached_tokens,
        completion_tokens: answer.usage.completion_tokens,
        tool_calls,
        orchestra: serde_json::json!({
            "request_id": answer.request_id,
            "score_version": answer.score_version,
            "section": section,
            "soloist": soloist,
            "generations": answer.usage.generations,
            "prompt_sources": answer.usage.prompt_sources,
            "lua_cpu_ms": answer.lua_cpu_ms,
            "elapsed_ms": answer.elapsed_ms,
            "trace": data.get("trace").cloned().unwrap_or(Value::Null),
        }),
        section,
        soloist,
        score_version: answer.score_version,
    })
}
