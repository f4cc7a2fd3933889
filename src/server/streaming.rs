//! Server-sent events in OpenAI's shape: a `data: {json}` event per chunk, an error
//! event when a stream fails after it started, and `data: [DONE]` at the end.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::Value;
use tokio::sync::mpsc;

use super::play::{Finished, Piece};

/// Turns the pieces of an answer into chunk JSON values, one call per piece.
pub trait Chunker: Send + 'static {
    /// The chunks that carry `text`.
    fn text(&mut self, text: &str) -> Vec<Value>;
    /// The final chunks (finish reason, tool calls, usage, the arrangement).
    fn done(&mut self, finished: &Finished) -> Vec<Value>;
}

/// An SSE response that follows the answer as it is played.
pub fn sse(rx: mpsc::Receiver<Piece>, chunker: impl Chunker) -> Response {
    Sse::new(events(rx, chunker))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn events(
    rx: mpsc::Receiver<Piece>,
    chunker: impl Chunker,
) -> impl Stream<Item = Result<Event, Infallible>> {
    // (receiver, chunker, events ready to send, ended)
    let state = (
        rx,
        chunker,
        std::collections::VecDeque::<Event>::new(),
        false,
    );
    futures::stream::unfold(
        state,
        |(mut rx, mut chunker, mut ready, mut ended)| async move {
            loop {
                if let Some(e) = ready.pop_front() {
                    return Some((Ok(e), (rx, chunker, ready, ended)));
                }
                if ended {
                    return None;
                }
                match rx.recv().await {
                    Some(Piece::Text(t)) => {
                        ready.extend(chunker.text(&t).iter().map(data));
                    }
                    Some(Piece::Done(f)) => {
                        ready.extend(chunker.done(&f).iter().map(data));
                        ready.push_back(Event::default().data("[DONE]"));
                        ended = true;
                    }
                    Some(Piece::Failed(e)) => {
                        tracing::warn!(error = %e.message, "stream failed");
                        ready.push_back(data(&e.body()));
                        ready.push_back(Event::default().data("[DONE]"));
                        ended = true;
                    }
                    None => return None,
                }
            }
        },
    )
}

fn data(v: &Value) -> Event {
    Event::default().data(v.to_string())
}
