//! `GET /metrics` over real HTTP on rehearsal models: parsed with the `prometheus-parse`
//! crate (and, in an ignored test CI runs, with Python's prometheus_client, both its
//! Prometheus and OpenMetrics parsers), the counters equal the requests and the tokens
//! that were really made; reloads, loads and the API key are counted and kept.

mod serve_support;

use std::io::Write;
use std::process::{Command, Stdio};

use orchestra::server::ServeConfig;
use serde_json::{Value, json};
use serve_support::*;

fn chat(model: &str, prompt: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": prompt }] })
}

/// Every sample of the exposition, as the `prometheus-parse` crate parsed it:
/// `{name, labels, value}` for each counter, gauge, untyped sample and a histogram's
/// `_sum` and `_count` (bucket series are left out: no test reads them).
fn parse(text: &str) -> Vec<Value> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines)
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"));
    // Every sample line of the text is accounted for: a parser that skipped lines it
    // could not read would make the assertions below pass on missing counters.
    let sample_lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter(|l| !l.contains("_bucket{"))
        .count();
    let samples: Vec<Value> = scrape
        .samples
        .iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let labels: serde_json::Map<String, Value> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            Some(json!({ "name": s.metric, "labels": labels, "value": value }))
        })
        .collect();
    assert_eq!(samples.len(), sample_lines, "every sample parsed:\n{text}");
    samples
}

/// The strict check: Python's prometheus_client reads the same text with its
/// Prometheus parser and its stricter OpenMetrics parser (`tests/metrics/parse.py`).
fn parse_with_prometheus_client(text: &str) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/metrics/parse.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (pip install prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics (pip install prometheus-client):\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["openmetrics_samples"].as_u64().unwrap() > 0);
    v["samples"].as_array().unwrap().clone()
}

/// The value of the sample `name` whose labels include `labels` (0 when absent).
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

async fn scrape(s: &Served, key: Option<&str>) -> reqwest::Response {
    let mut req = client().get(format!("http://{}/metrics", s.addr));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

#[test]
fn counters_equal_the_requests_and_tokens_that_were_made() {
    runtime().block_on(async {
        let s = serve("metrics_counts", ServeConfig::default()).await;
        let mut coltrane_tokens = 0;
        let (mut prompt_total, mut completion_total) = (0, 0);
        for _ in 0..3 {
            let body: Value = client()
                .post(format!("{}/chat/completions", s.url))
                .json(&chat("coltrane", "hello"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(body["choices"][0]["message"]["content"], script("coltrane"));
            coltrane_tokens += body["usage"]["completion_tokens"].as_u64().unwrap();
            prompt_total += body["usage"]["prompt_tokens"].as_u64().unwrap();
            completion_total += body["usage"]["completion_tokens"].as_u64().unwrap();
        }
        // The arrangement: coltrane solos on code, a reviewer reviews.
        let body: Value = client()
            .post(format!("{}/chat/completions", s.url))
            .json(&chat(
                "orchestra",
                "write a function that reverses a string",
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        prompt_total += body["usage"]["prompt_tokens"].as_u64().unwrap();
        completion_total += body["usage"]["completion_tokens"].as_u64().unwrap();
        let trace = &body["orchestra"]["trace"];
        for i in trace["instruments"].as_array().unwrap() {
            if i["name"] == "coltrane" {
                coltrane_tokens += i["tokens"].as_u64().unwrap();
            }
        }
        // A model that does not exist: answered with an error before anything plays.
        let missing = client()
            .post(format!("{}/chat/completions", s.url))
            .json(&chat("nobody", "hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);

        let res = scrape(&s, None).await;
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let samples = parse(&res.text().await.unwrap());
        let ok = |model: &str| {
            value(
                &samples,
                "orchestra_requests_total",
                &[("model", model), ("outcome", "ok")],
            )
        };
        assert_eq!(ok("coltrane"), 3.0);
        assert_eq!(ok("orchestra"), 1.0);
        assert_eq!(
            value(
                &samples,
                "orchestra_requests_total",
                &[("model", "orchestra"), ("section", "code")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &samples,
                "orchestra_completion_tokens_total",
                &[("instrument", "coltrane")]
            ),
            coltrane_tokens as f64
        );
        assert_eq!(
            value(&samples, "orchestra_completion_tokens_total", &[]),
            completion_total as f64
        );
        assert_eq!(
            value(&samples, "orchestra_prompt_tokens_total", &[]),
            prompt_total as f64
        );
        assert_eq!(
            value(
                &samples,
                "orchestra_request_duration_seconds_count",
                &[("model", "coltrane")]
            ),
            3.0
        );
        assert_eq!(
            value(
                &samples,
                "orchestra_time_to_first_token_seconds_count",
                &[("model", "coltrane")]
            ),
            3.0
        );
        assert_eq!(
            value(
                &samples,
                "orchestra_model_loads_total",
                &[("instrument", "coltrane")]
            ),
            1.0
        );
        assert!(
            value(
                &samples,
                "orchestra_resident_bytes",
                &[("instrument", "coltrane")]
            ) > 0.0
        );
        assert_eq!(
            value(&samples, "orchestra_memory_budget_bytes", &[]),
            (2u64 << 30) as f64
        );
        assert_eq!(value(&samples, "orchestra_requests_in_flight", &[]), 0.0);
        assert_eq!(value(&samples, "orchestra_queue_depth", &[]), 0.0);
    });
}

#[test]
fn reloads_are_counted_accepted_and_rejected() {
    runtime().block_on(async {
        let s = serve("metrics_reloads", ServeConfig::default()).await;
        std::fs::write(&s.score, "return { perform = function(req) return 'x' end").unwrap();
        assert!(!s.conductor.reload().await.unwrap().ok);
        std::fs::write(&s.score, score_text("v2")).unwrap();
        assert!(s.conductor.reload().await.unwrap().ok);
        let samples = parse(&scrape(&s, None).await.text().await.unwrap());
        for outcome in ["accepted", "rejected"] {
            assert_eq!(
                value(
                    &samples,
                    "orchestra_score_reloads_total",
                    &[("outcome", outcome)]
                ),
                1.0,
                "{outcome}"
            );
        }
    });
}

#[test]
fn metrics_and_the_api_need_the_key_and_the_page_does_not() {
    runtime().block_on(async {
        let config = ServeConfig {
            api_key: Some("sesame".into()),
            ..ServeConfig::default()
        };
        let s = serve("metrics_key", config).await;
        assert_eq!(scrape(&s, None).await.status(), 401);
        assert_eq!(scrape(&s, Some("wrong")).await.status(), 401);
        assert_eq!(scrape(&s, Some("sesame")).await.status(), 200);
        let base = format!("http://{}", s.addr);
        let get = |path: &str| client().get(format!("{base}{path}")).send();
        assert_eq!(get("/api/status").await.unwrap().status(), 401);
        assert_eq!(get("/api/status?key=sesame").await.unwrap().status(), 200);
        assert_eq!(get("/api/status?key=nope").await.unwrap().status(), 401);
        let page = get("/").await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("EventSource"));
        assert_eq!(get("/health").await.unwrap().status(), 200);
    });
}

#[test]
#[ignore = "needs Python's prometheus_client: pip install prometheus-client, then cargo test --release --test metrics -- --include-ignored"]
fn prometheus_client_reads_the_same_counters_as_openmetrics_and_prometheus_text() {
    runtime().block_on(async {
        let s = serve("metrics_python", ServeConfig::default()).await;
        for _ in 0..2 {
            let res = client()
                .post(format!("{}/chat/completions", s.url))
                .json(&chat("coltrane", "hello"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
        let text = scrape(&s, None).await.text().await.unwrap();
        let ours = parse(&text);
        let theirs = parse_with_prometheus_client(&text);
        for name in [
            "orchestra_requests_total",
            "orchestra_completion_tokens_total",
            "orchestra_prompt_tokens_total",
            "orchestra_request_duration_seconds_count",
            "orchestra_memory_budget_bytes",
        ] {
            assert_eq!(value(&ours, name, &[]), value(&theirs, name, &[]), "{name}");
        }
        assert_eq!(
            value(
                &theirs,
                "orchestra_requests_total",
                &[("model", "coltrane")]
            ),
            2.0
        );
    });
}
