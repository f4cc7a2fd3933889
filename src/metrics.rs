//! Prometheus metrics of one orchestra (the `prometheus-client` crate): counters and
//! histograms updated where things happen — the stage counts loads, evictions and
//! tokens, the conductor counts reloads, the server counts requests — never derived
//! from the event bus, which drops events under load. Rendered as text by
//! [`Metrics::encode`]; this module knows nothing about HTTP.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

type Labels1 = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];
type Labels3 = [(&'static str, String); 3];
type Histograms = Family<Labels1, Histogram, fn() -> Histogram>;

/// Seconds from 5 ms to about 80 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

struct Inner {
    registry: Registry,
    requests: Family<Labels3, Counter>,
    refused: Counter,
    prompt_tokens: Family<Labels1, Counter>,
    prompt_sources: Family<Labels2, Counter>,
    completion_tokens: Family<Labels1, Counter>,
    generations: Family<Labels2, Counter>,
    ttft: Histograms,
    duration: Histograms,
    queued: Gauge,
    in_flight: Gauge,
    resident: Family<Labels1, Gauge>,
    budget: Gauge,
    loads: Family<Labels1, Counter>,
    evictions: Family<Labels1, Counter>,
    load_failures: Family<Labels1, Counter>,
    reloads: Family<Labels1, Counter>,
}

/// The registry and every metric in it. Cheap to clone; clones count into the same
/// metrics. One per conductor (tests run several servers in one process).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("orchestra");
        let requests = Family::<Labels3, Counter>::default();
        r.register(
            "requests",
            "Requests answered, by the model id the client sent, the section that played and the outcome (ok, error, cancelled)",
            requests.clone(),
        );
        let refused = Counter::default();
        r.register(
            "requests_refused",
            "Requests refused because every slot was playing and the queue was full",
            refused.clone(),
        );
        let prompt_tokens = Family::<Labels1, Counter>::default();
        r.register(
            "prompt_tokens",
            "Prompt tokens of finished generations, by instrument",
            prompt_tokens.clone(),
        );
        let prompt_sources = Family::<Labels2, Counter>::default();
        r.register(
            "prompt_tokens_by_source",
            "Prompt tokens of finished generations by instrument and where they came from: slot (the slot's prompt cache), ram or disk (a prefix snapshot), computed (prefilled)",
            prompt_sources.clone(),
        );
        let completion_tokens = Family::<Labels1, Counter>::default();
        r.register(
            "completion_tokens",
            "Generated tokens of finished generations, by instrument",
            completion_tokens.clone(),
        );
        let generations = Family::<Labels2, Counter>::default();
        r.register(
            "generations",
            "Generations by instrument and outcome (finished, failed, cancelled)",
            generations.clone(),
        );
        let ttft: Histograms = Family::new_with_constructor(latency_histogram);
        r.register_with_unit(
            "time_to_first_token",
            "From a request's arrival to the first text sent back (the whole answer when nothing streamed), by model id",
            Unit::Seconds,
            ttft.clone(),
        );
        let duration: Histograms = Family::new_with_constructor(latency_histogram);
        r.register_with_unit(
            "request_duration",
            "From a request's arrival to the end of its answer, by model id",
            Unit::Seconds,
            duration.clone(),
        );
        let queued = Gauge::default();
        r.register("queue_depth", "Requests waiting for a turn", queued.clone());
        let in_flight = Gauge::default();
        r.register(
            "requests_in_flight",
            "Requests playing now",
            in_flight.clone(),
        );
        let resident = Family::<Labels1, Gauge>::default();
        r.register_with_unit(
            "resident",
            "Memory held by each loaded instrument (weights, KV cache, compute buffers); 0 when offstage",
            Unit::Bytes,
            resident.clone(),
        );
        let budget = Gauge::default();
        r.register_with_unit(
            "memory_budget",
            "Memory all resident models may use together",
            Unit::Bytes,
            budget.clone(),
        );
        let loads = Family::<Labels1, Counter>::default();
        r.register("model_loads", "Models loaded, by instrument", loads.clone());
        let evictions = Family::<Labels1, Counter>::default();
        r.register(
            "model_evictions",
            "Models unloaded (for room, idle, asked, removed from the score), by instrument",
            evictions.clone(),
        );
        let load_failures = Family::<Labels1, Counter>::default();
        r.register(
            "model_load_failures",
            "Model loads that failed, by instrument",
            load_failures.clone(),
        );
        let reloads = Family::<Labels1, Counter>::default();
        r.register(
            "score_reloads",
            "Score reloads by outcome (accepted, rejected)",
            reloads.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry: r,
                requests,
                refused,
                prompt_tokens,
                prompt_sources,
                completion_tokens,
                generations,
                ttft,
                duration,
                queued,
                in_flight,
                resident,
                budget,
                loads,
                evictions,
                load_failures,
                reloads,
            }),
        }
    }

    /// A request ended: `outcome` is `ok`, `error` or `cancelled`; `section` is empty
    /// when none played.
    pub fn request_finished(&self, model: &str, section: &str, outcome: &str, seconds: f64) {
        let i = &self.inner;
        i.requests
            .get_or_create(&[
                ("model", model.to_owned()),
                ("section", section.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        i.duration
            .get_or_create(&[("model", model.to_owned())])
            .observe(seconds);
    }

    /// The first text of a request's answer left (or the whole answer, unstreamed).
    pub fn first_token(&self, model: &str, seconds: f64) {
        self.inner
            .ttft
            .get_or_create(&[("model", model.to_owned())])
            .observe(seconds);
    }

    pub fn request_refused(&self) {
        self.inner.refused.inc();
    }

    /// A generation of `instrument` ended: `outcome` is `finished`, `failed` or
    /// `cancelled`; tokens count for finished ones (a cancelled one counts what it
    /// generated).
    pub fn generation(&self, instrument: &str, outcome: &str, prompt: usize, completion: usize) {
        let i = &self.inner;
        let who = [("instrument", instrument.to_owned())];
        i.prompt_tokens.get_or_create(&who).inc_by(prompt as u64);
        i.completion_tokens
            .get_or_create(&who)
            .inc_by(completion as u64);
        i.generations
            .get_or_create(&[
                ("instrument", instrument.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// Where a finished generation's prompt tokens came from.
    pub fn prompt_sources(&self, instrument: &str, sources: &crate::engine::PromptSources) {
        for (source, n) in [
            ("slot", sources.slot),
            ("ram", sources.ram),
            ("disk", sources.disk),
            ("computed", sources.computed),
        ] {
            self.inner
                .prompt_sources
                .get_or_create(&[
                    ("instrument", instrument.to_owned()),
                    ("source", source.to_owned()),
                ])
                .inc_by(n as u64);
        }
    }

    pub fn model_loaded(&self, instrument: &str, bytes: u64) {
        let who = [("instrument", instrument.to_owned())];
        self.inner.loads.get_or_create(&who).inc();
        self.inner.resident.get_or_create(&who).set(bytes as i64);
    }

    /// An instrument's resident bytes now (shared weights counted with one of the
    /// instruments sharing them).
    pub fn set_resident(&self, instrument: &str, bytes: u64) {
        self.inner
            .resident
            .get_or_create(&[("instrument", instrument.to_owned())])
            .set(bytes as i64);
    }

    pub fn model_load_failed(&self, instrument: &str) {
        self.inner
            .load_failures
            .get_or_create(&[("instrument", instrument.to_owned())])
            .inc();
    }

    pub fn model_evicted(&self, instrument: &str) {
        let who = [("instrument", instrument.to_owned())];
        self.inner.evictions.get_or_create(&who).inc();
        self.inner.resident.get_or_create(&who).set(0);
    }

    /// A reload attempt: accepted or rejected.
    pub fn reload(&self, accepted: bool) {
        let outcome = if accepted { "accepted" } else { "rejected" };
        self.inner
            .reloads
            .get_or_create(&[("outcome", outcome.to_owned())])
            .inc();
    }

    /// Gauges of the moment (queue, in flight, budget): set by whoever knows them
    /// right before [`Metrics::encode`].
    pub fn set_load(&self, in_flight: usize, queued: usize) {
        self.inner.in_flight.set(in_flight as i64);
        self.inner.queued.set(queued as i64);
    }

    pub fn set_budget(&self, bytes: u64) {
        self.inner.budget.set(bytes as i64);
    }

    /// The text exposition (OpenMetrics 1.0, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_with_prometheus_names_and_base_units() {
        let m = Metrics::new();
        m.request_finished("orchestra", "code", "ok", 0.25);
        m.generation("coltrane", "finished", 10, 7);
        m.prompt_sources(
            "coltrane",
            &crate::engine::PromptSources {
                disk: 8,
                computed: 2,
                ..Default::default()
            },
        );
        m.model_loaded("coltrane", 1024);
        m.reload(false);
        let text = m.encode();
        for line in [
            r#"orchestra_requests_total{model="orchestra",section="code",outcome="ok"} 1"#,
            r#"orchestra_completion_tokens_total{instrument="coltrane"} 7"#,
            r#"orchestra_prompt_tokens_by_source_total{instrument="coltrane",source="disk"} 8"#,
            r#"orchestra_prompt_tokens_by_source_total{instrument="coltrane",source="computed"} 2"#,
            r#"orchestra_resident_bytes{instrument="coltrane"} 1024"#,
            r#"orchestra_score_reloads_total{outcome="rejected"} 1"#,
            "# TYPE orchestra_request_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
