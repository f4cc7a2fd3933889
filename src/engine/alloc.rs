//! What llama.cpp really allocated for a context: the sizes it reports while creating
//! it (`KV buffer size`, `compute buffer size`, `output buffer size`). llama.cpp has no
//! API that returns them, only these log lines, which llama-cpp-2 routes into
//! `tracing` on the creating thread; this module listens on that thread while the
//! context is created, and passes every event on to the subscriber already in place.

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata, Subscriber};

/// Bytes llama.cpp reported allocating for one context, when it said so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Allocations {
    /// KV cache buffers (and recurrent-state buffers), every cache summed: a model
    /// with sliding-window layers has two caches.
    pub(crate) kv: Option<u64>,
    /// Compute (graph scratch) buffers plus the output buffer (logits, embeddings).
    pub(crate) compute: Option<u64>,
}

/// The target llama-cpp-2 gives llama.cpp's log events.
const LLAMA_TARGET: &str = "llama-cpp-2";

/// Runs `f` (which creates a context) and returns what llama.cpp said it allocated.
pub(crate) fn measure<R>(f: impl FnOnce() -> R) -> (R, Allocations) {
    let inner = tracing::dispatcher::get_default(Dispatch::clone);
    let listener = std::sync::Arc::new(Listener {
        inner,
        found: std::sync::Mutex::new(Allocations::default()),
    });
    let dispatch = Dispatch::from(listener.clone());
    let out = tracing::dispatcher::with_default(&dispatch, f);
    drop(dispatch);
    let found = *listener.found.lock().unwrap_or_else(|e| e.into_inner());
    (out, found)
}

/// Adds the size a log line reports to `allocations`.
fn note(allocations: &mut Allocations, line: &str) {
    let add = |slot: &mut Option<u64>, bytes: u64| *slot = Some(slot.unwrap_or(0) + bytes);
    let size = |label: &str| {
        let rest = &line[line.find(label)? + label.len()..];
        let mib: f64 = rest.trim().strip_suffix("MiB")?.trim().parse().ok()?;
        Some((mib * 1024.0 * 1024.0).round() as u64)
    };
    if let Some(b) = size("KV buffer size =").or_else(|| size("RS buffer size =")) {
        add(&mut allocations.kv, b);
    } else if let Some(b) = size("compute buffer size =").or_else(|| size("output buffer size =")) {
        add(&mut allocations.compute, b);
    }
}

/// Reads llama.cpp's size lines and forwards everything to `inner`.
struct Listener {
    inner: Dispatch,
    found: std::sync::Mutex<Allocations>,
}

struct Message<'a>(&'a mut Allocations);

impl Visit for Message<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            note(self.0, value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            note(self.0, &format!("{value:?}"));
        }
    }
}

impl Subscriber for Listener {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.inner.register_callsite(metadata)
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        // llama.cpp's size lines are INFO; everything else as enabled now.
        let now = tracing::level_filters::LevelFilter::current();
        Some(now.max(tracing::level_filters::LevelFilter::INFO))
    }
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == LLAMA_TARGET || self.inner.enabled(metadata)
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.inner.new_span(span)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        self.inner.record(span, values)
    }
    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.inner.record_follows_from(span, follows)
    }
    fn event(&self, event: &Event<'_>) {
        if event.metadata().target() == LLAMA_TARGET {
            let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
            event.record(&mut Message(&mut found));
        }
        if self.inner.enabled(event.metadata()) {
            self.inner.event(event)
        }
    }
    fn enter(&self, span: &Id) {
        self.inner.enter(span)
    }
    fn exit(&self, span: &Id) {
        self.inner.exit(span)
    }
    fn clone_span(&self, id: &Id) -> Id {
        self.inner.clone_span(id)
    }
    fn try_close(&self, id: Id) -> bool {
        self.inner.try_close(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_size_lines_are_read_and_summed() {
        let mut a = Allocations::default();
        for line in [
            "      CPU KV buffer size =     6.00 MiB",
            "size =    6.00 MiB (   256 cells,   2 layers,  1/1 seqs), K (f16):    3.00 MiB",
            "      CPU KV buffer size =     1.50 MiB",
            "      CPU  output buffer size =     0.12 MiB",
            "      CPU compute buffer size =    10.00 MiB",
            "      CPU compute buffer size is  10.0000 MiB, matches expectation",
        ] {
            note(&mut a, line);
        }
        assert_eq!(a.kv, Some(7_864_320));
        assert_eq!(a.compute, Some(10_485_760 + 125_829));
    }
}
