//! `orchestra serve` over real HTTP on 127.0.0.1: the OpenAI shapes, streaming, model
//! ids, the arrangement's trace, errors, admission control, disconnects and reloads —
//! all on real llama.cpp inference (rehearsal models replay known text greedily).

mod serve_support;

use std::time::Duration;

use orchestra::events::EventKind;
use orchestra::server::ServeConfig;
use serde_json::{Value, json};
use serve_support::*;

fn chat(model: &str, prompt: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": prompt }] })
}

#[test]
fn models_lists_the_arrangement_its_sections_and_every_instrument() {
    runtime().block_on(async {
        let s = serve("models", ServeConfig::default()).await;
        let body: Value = client()
            .get(format!("{}/models", s.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(body["object"], "list");
        for id in [
            "orchestra",
            "orchestra/code",
            "orchestra/creative",
            "orchestra/analysis",
            "orchestra/review",
            "coltrane",
            "ella",
            "monk",
            "mingus",
            "drone",
        ] {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
        let drone = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == "drone")
            .unwrap();
        assert_eq!(drone["context_length"], 8192);
        assert_eq!(drone["owned_by"], "orchestra");
    });
}

#[test]
fn an_instrument_answers_alone_with_real_usage() {
    runtime().block_on(async {
        let s = serve("instrument", ServeConfig::default()).await;
        let res = client()
            .post(format!("{}/chat/completions", s.url))
            .json(&chat("coltrane", "hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-orchestra-soloist"], "coltrane");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["message"]["role"], "assistant");
        assert_eq!(body["choices"][0]["message"]["content"], script("coltrane"));
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        let usage = &body["usage"];
        assert!(usage["prompt_tokens"].as_u64().unwrap() > 3);
        assert!(usage["completion_tokens"].as_u64().unwrap() > 3);
        assert_eq!(
            usage["total_tokens"].as_u64().unwrap(),
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        );
        assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
        // The same conversation again: its prompt comes from the slot's cache.
        let again: Value = client()
            .post(format!("{}/chat/completions", s.url))
            .json(&chat("coltrane", "hello"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            again["usage"]["prompt_tokens_details"]["cached_tokens"],
            again["usage"]["prompt_tokens"].as_u64().unwrap() - 1
        );
        assert_eq!(
            again["choices"][0]["message"]["content"],
            script("coltrane")
        );
    });
}

#[test]
fn max_tokens_ends_the_answer_with_finish_reason_length() {
    runtime().block_on(async {
        let s = serve("length", ServeConfig::default()).await;
        let mut req = chat("ella", "hello");
        req["max_completion_tokens"] = json!(3);
        let body: Value = client()
            .post(format!("{}/chat/completions", s.url))
            .json(&req)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["usage"]["completion_tokens"], 3);
        let text = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(script("ella").starts_with(text) && text.len() < script("ella").len());
    });
}

#[test]
fn a_stream_sends_role_then_content_chunks_then_finish_usage_and_done() {
    runtime().block_on(async {
        let s = serve("stream", ServeConfig::default()).await;
        let mut req = chat("monk", "hello");
        req["stream"] = json!(true);
        req["stream_options"] = json!({ "include_usage": true });
        let res = client()
            .post(format!("{}/chat/completions", s.url))
            .json(&req)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let events = sse_data(&res.text().await.unwrap());
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk")
        );
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, script("monk"));
        let content_chunks = chunks
            .iter()
            .filter(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())
            })
            .count();
        assert!(
            content_chunks > 3,
            "streamed in pieces, got {content_chunks}"
        );
        let finish = chunks
            .iter()
            .find(|c| c["choices"][0]["finish_reason"].is_string())
            .unwrap();
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(finish["orchestra"]["instrument"], "monk");
        let usage = chunks.last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 3);
    });
}

#[test]
fn the_orchestra_model_plays_the_arrangement_and_reports_its_trace() {
    runtime().block_on(async {
        let s = serve("arrangement", ServeConfig::default()).await;
        let res = client()
            .post(format!("{}/chat/completions", s.url))
            .json(&chat(
                "orchestra",
                "write a function that reverses a string",
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-orchestra-section"], "code");
        assert_eq!(res.headers()["x-orchestra-soloist"], "coltrane");
        assert_eq!(res.headers()["x-orchestra-score-version"], "1");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], script("coltrane"));
        let o = &body["orchestra"];
        assert_eq!(o["section"], "code");
        assert_eq!(o["soloist"], "coltrane");
        assert_eq!(o["trace"]["route"]["name"], "code words");
        // The solo and the review both count in usage.
        assert!(o["generations"].as_u64().unwrap() >= 2, "{o}");
        assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 3);
    });
}

#[test]
fn orchestra_slash_section_forces_the_section() {
    runtime().block_on(async {
        let s = serve("section", ServeConfig::default()).await;
        let body: Value = client()
            .post(format!("{}/chat/completions", s.url))
            .json(&chat(
                "orchestra/creative",
                "write a function that reverses a string",
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["orchestra"]["section"], "creative");
        assert_eq!(body["orchestra"]["soloist"], "ella");
        assert_eq!(body["choices"][0]["message"]["content"], script("ella"));
        assert_eq!(body["orchestra"]["trace"]["route"]["kind"], "client");
    });
}

#[test]
fn legacy_completions_continue_a_raw_prompt() {
    runtime().block_on(async {
        let s = serve("completions", ServeConfig::default()).await;
        let body: Value = client()
            .post(format!("{}/completions", s.url))
            .json(&json!({ "model": "mingus", "prompt": "review", "max_tokens": 4 }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["usage"]["completion_tokens"], 4);
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert!(!body["choices"][0]["text"].as_str().unwrap().is_empty());
    });
}

#[test]
fn bad_requests_get_openai_errors_with_the_right_status() {
    runtime().block_on(async {
        let config = ServeConfig {
            body_limit: 4096,
            ..ServeConfig::default()
        };
        let s = serve("errors", config).await;
        let post = |path: &str, body: String| {
            client()
                .post(format!("{}{path}", s.url))
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        let cases: Vec<(&str, String, u16, &str)> = vec![
            ("/chat/completions", "{not json".into(), 400, "invalid_json"),
            (
                "/chat/completions",
                chat("nobody", "hi").to_string(),
                404,
                "model_not_found",
            ),
            (
                "/chat/completions",
                chat("orchestra/bebop", "hi").to_string(),
                404,
                "model_not_found",
            ),
            (
                "/chat/completions",
                chat("coltrane", &"x".repeat(10_000)).to_string(),
                413,
                "",
            ),
            (
                "/chat/completions",
                json!({"model": "coltrane", "messages": []}).to_string(),
                400,
                "",
            ),
            (
                "/embeddings",
                json!({"model": "coltrane", "input": "hi"}).to_string(),
                400,
                "model_not_supported",
            ),
        ];
        for (path, body, status, code) in cases {
            let res = post(path, body.clone()).await.unwrap();
            assert_eq!(
                res.status().as_u16(),
                status,
                "{path} {}",
                &body[..body.len().min(80)]
            );
            let err: Value = res.json().await.unwrap();
            assert!(
                err["error"]["message"].as_str().unwrap().len() > 10,
                "{err}"
            );
            assert!(err["error"]["type"].is_string());
            if !code.is_empty() {
                assert_eq!(err["error"]["code"], code, "{err}");
            }
        }
        let res = client()
            .get(format!("{}/nowhere", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        // A long prompt is a client error that says what to change, on every path: one
        // instrument, a section's arrangement, and the score's whole arrangement (the
        // refusal travels through the Lua score as a typed error, not a 500).
        for model in ["coltrane", "orchestra/code", "orchestra"] {
            let res = post(
                "/chat/completions",
                chat(model, &"jazz ".repeat(700)).to_string(),
            )
            .await
            .unwrap();
            let status = res.status().as_u16();
            let err: Value = res.json().await.unwrap();
            assert_eq!(status, 400, "{model}: {err}");
            assert_eq!(err["error"]["code"], "context_length_exceeded", "{model}");
            let message = err["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("allows 511") && message.contains("raise `context`"),
                "{model}: {message}"
            );
        }
        // A user message without content is the client's mistake, said as such.
        for body in [
            json!({"model": "coltrane", "messages": [{"role": "user", "content": null}]}),
            json!({"model": "coltrane", "messages": [{"role": "user"}]}),
        ] {
            let res = post("/chat/completions", body.to_string()).await.unwrap();
            let status = res.status().as_u16();
            let err: Value = res.json().await.unwrap();
            assert_eq!(status, 400, "{body}: {err}");
            assert!(
                err["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("`messages[0].content` is missing or null"),
                "{err}"
            );
        }
    });
}

#[test]
fn an_api_key_is_required_when_set() {
    runtime().block_on(async {
        let config = ServeConfig {
            api_key: Some("sesame".into()),
            ..ServeConfig::default()
        };
        let s = serve("apikey", config).await;
        let url = format!("{}/models", s.url);
        let none = client().get(&url).send().await.unwrap();
        assert_eq!(none.status(), 401);
        let body: Value = none.json().await.unwrap();
        assert_eq!(body["error"]["type"], "authentication_error");
        let wrong = client().get(&url).bearer_auth("open").send().await.unwrap();
        assert_eq!(wrong.status(), 401);
        let right = client()
            .get(&url)
            .bearer_auth("sesame")
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200);
        // Health checks need no key.
        let health = client()
            .get(format!("http://{}/health", s.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    });
}

#[test]
fn binding_beyond_loopback_without_a_key_is_refused() {
    let lan: std::net::IpAddr = "0.0.0.0".parse().unwrap();
    let err = orchestra::server::check_bind(lan, None).unwrap_err();
    assert!(err.contains("--api-key"), "{err}");
    assert!(orchestra::server::check_bind(lan, Some("k")).is_ok());
    assert!(orchestra::server::check_bind("127.0.0.1".parse().unwrap(), None).is_ok());
}

/// Starts a long streaming generation on `drone` and reads its first chunk, so the
/// request is known to be playing.
async fn hold(s: &Served) -> reqwest::Response {
    let mut req = chat("drone", "hold");
    req["stream"] = json!(true);
    req["ignore_eos"] = json!(true);
    req["max_tokens"] = json!(7000);
    let mut res = client()
        .post(format!("{}/chat/completions", s.url))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let first = res.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data:"));
    res
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    runtime().block_on(async {
        let config = ServeConfig {
            max_in_flight: 1,
            max_queue: 0,
            ..ServeConfig::default()
        };
        let s = serve("queue", config).await;
        let held = hold(&s).await;
        let res = client()
            .post(format!("{}/chat/completions", s.url))
            .json(&chat("coltrane", "hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["retry-after"], "1");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"]["code"], "queue_full");
        drop(held);
    });
}

#[test]
fn a_client_that_disconnects_cancels_its_generation_and_frees_its_turn() {
    runtime().block_on(async {
        let config = ServeConfig {
            max_in_flight: 1,
            max_queue: 1,
            ..ServeConfig::default()
        };
        let s = serve("disconnect", config).await;
        let mut events = s.conductor.events().subscribe();
        let held = hold(&s).await;
        drop(held);
        // The generation ends (cancelled) long before the 7000 tokens it was asked for.
        let tokens = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let e = events.recv().await.unwrap();
                if let EventKind::GenerationFinished { model, tokens, .. } = e.kind
                    && model == "drone"
                {
                    return tokens;
                }
            }
        })
        .await
        .expect("the cancelled generation reports its end");
        assert!(tokens < 3000, "the generation ran on to {tokens} tokens");
        // The turn it held is free: the next request is admitted and answered.
        let res = client()
            .post(format!("{}/chat/completions", s.url))
            .json(&chat("coltrane", "hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(s.state.admission.in_flight(), 0);
    });
}

#[test]
fn a_reload_while_a_stream_plays_lets_it_finish_on_its_version() {
    runtime().block_on(async {
        let s = serve("reload", ServeConfig::default()).await;
        s.conductor.watch().await.unwrap();
        let mut reloads = s.conductor.reloads();
        let mut req = chat("orchestra", "hold on");
        req["stream"] = json!(true);
        let mut res = client()
            .post(format!("{}/chat/completions", s.url))
            .json(&req)
            .send()
            .await
            .unwrap();
        // Read until the score's first words arrive: the request is playing on v1.
        let mut seen = String::new();
        while !seen.contains("v1:") {
            let chunk = res.chunk().await.unwrap().expect("stream open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        std::fs::write(&s.score, score_text("v2")).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(30), reloads.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(r.ok, "{:?}", r.error);
        while let Some(chunk) = res.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        let events = sse_data(&seen);
        let finish: Value = events
            .iter()
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str::<Value>(e).unwrap())
            .find(|c| c["choices"][0]["finish_reason"].is_string())
            .unwrap();
        assert_eq!(finish["orchestra"]["score_version"], 1);
        // A new request plays the new version.
        let mut next = chat("orchestra", "hold on");
        next["max_tokens"] = json!(8);
        let body: Value = client()
            .post(format!("{}/chat/completions", s.url))
            .json(&next)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["orchestra"]["score_version"], 2);
        assert!(
            body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .starts_with("v2:")
        );
    });
}
