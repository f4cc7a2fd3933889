//! Remote instruments over real HTTP on 127.0.0.1: a second `orchestra serve` playing a
//! rehearsal model as the remote (its answer is known), hand-written servers that die
//! mid-stream, never answer, or fail once with a 503, and `orchestra check` on a remote
//! nobody serves.

mod serve_support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use orchestra::score::{Conductor, Request, ScoreSource};
use orchestra::server::ServeConfig;
use serve_support::{client, options, runtime, scratch, script, serve, serve_file, sse_data};

/// Writes `text` as `score.lua` in a fresh folder for `test`.
fn write(test: &str, text: &str) -> PathBuf {
    let dir = scratch().join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("score.lua");
    std::fs::write(&path, text).unwrap();
    path
}

/// A score whose code section is `remote` (the Lua options of a remote instrument)
/// first, then the local rehearsal model `coltrane`; `perform` is a streamed solo.
fn fallback_score(remote: &str) -> String {
    format!(
        r#"local arrange = require("orchestra.arrange")
local band = orchestra.band {{ memory = "1GiB" }}
band:add("faraway", {{ {remote}, section = "code", sampling = {{ temperature = 0 }} }})
band:add("coltrane", {{ model = orchestra.rehearsal_model("coltrane"), section = "code",
  context = 512, sampling = {{ temperature = 0 }} }})
return {{
  perform = function(req)
    local draft = assert(arrange.solo(band, "code", req, {{ stream = true }}))
    return arrange.answer(req, draft)
  end,
}}
"#
    )
}

/// Plays `prompt` through `score`; the answer and everything it streamed.
async fn perform(score: &std::path::Path, prompt: &str) -> (orchestra::score::Answer, String) {
    let conductor = Conductor::start(ScoreSource::file(score), options())
        .await
        .expect("the score loads");
    let (sink, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let answer = conductor
        .perform_streaming(Request::prompt(prompt), sink)
        .await
        .expect("the request is answered");
    let mut streamed = String::new();
    while let Ok(piece) = rx.try_recv() {
        streamed.push_str(&piece);
    }
    (answer, streamed)
}

/// Reads one HTTP request (headers and a `content-length` body).
async fn read_request(sock: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";

fn sse_chunk(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    )
}

/// A server that streams two pieces of an answer, then closes the connection.
async fn dies_mid_stream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_request(&mut sock).await;
                let _ = sock.write_all(SSE_HEAD.as_bytes()).await;
                for piece in ["Half an ", "answer"] {
                    let _ = sock.write_all(sse_chunk(piece).as_bytes()).await;
                    let _ = sock.flush().await;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                // Dropped here: no finish reason, no `[DONE]`.
            });
        }
    });
    format!("http://{addr}/v1")
}

/// A server that accepts connections and never says a word.
async fn never_answers() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    format!("http://{addr}/v1")
}

#[test]
fn a_second_orchestra_serve_plays_as_a_remote_instrument() {
    runtime().block_on(async {
        // The remote needs a key; the score names the variable that holds it.
        let upstream = serve(
            "upstream",
            ServeConfig {
                api_key: Some("remote-secret".into()),
                ..ServeConfig::default()
            },
        )
        .await;
        // SAFETY: no other test of this binary reads or writes this variable.
        unsafe { std::env::set_var("ORCHESTRA_TEST_REMOTE_KEY", "remote-secret") };
        let remote = format!(
            r#"url = "{}", model = "coltrane", api_key_env = "ORCHESTRA_TEST_REMOTE_KEY", timeout = "30s""#,
            upstream.url
        );
        let score = write("second-serve", &fallback_score(&remote));

        // Through the arrangement: the remote answers, nobody falls back.
        let (answer, streamed) = perform(&score, "write a function").await;
        assert_eq!(answer.text, script("coltrane"));
        assert_eq!(streamed, script("coltrane"));
        let trace = &answer.data["trace"];
        assert_eq!(trace["solo"]["player"], "faraway");
        assert!(trace.get("fallbacks").is_none(), "{trace:#}");
        let played = &trace["instruments"][0];
        assert_eq!(played["name"], "faraway");
        assert_eq!(played["remote"], upstream.url.as_str());
        assert!(played["tempo"].as_f64().unwrap() > 0.0, "{played}");
        assert!(played["swing"].as_f64().unwrap() > 0.0, "{played}");
        assert!(answer.usage.completion_tokens > 3);

        // Served: the remote instrument by name, streamed, and the section through it.
        let local = serve_file(&score, ServeConfig::default()).await;
        let body = client()
            .post(format!("{}/chat/completions", local.url))
            .json(&json!({"model": "faraway", "stream": true,
                "messages": [{"role": "user", "content": "hello"}]}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let text: String = sse_data(&body)
            .iter()
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(text, script("coltrane"));
        let section: Value = client()
            .post(format!("{}/chat/completions", local.url))
            .json(&json!({"model": "orchestra/code",
                "messages": [{"role": "user", "content": "hello"}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(section["choices"][0]["message"]["content"], script("coltrane"));
        assert_eq!(section["orchestra"]["soloist"], "faraway");

        // Counted like any instrument, never on the stage.
        let metrics = client()
            .get(format!("http://{}/metrics", local.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(r#"orchestra_generations_total{instrument="faraway",outcome="finished"} 2"#),
            "{metrics}"
        );
        let stage = local.conductor.stage_status();
        assert!(stage.models.iter().all(|m| m.name != "faraway"));
        let info = local.conductor.info().await.unwrap();
        let faraway = info.instruments.iter().find(|i| i.name == "faraway").unwrap();
        assert_eq!(faraway.remote.as_deref(), Some(upstream.url.as_str()));

        // A wrong key is the remote's 401, said plainly, and the section falls back.
        unsafe { std::env::set_var("ORCHESTRA_TEST_REMOTE_KEY", "wrong") };
        let (answer, _) = perform(&score, "write a function").await;
        unsafe { std::env::set_var("ORCHESTRA_TEST_REMOTE_KEY", "remote-secret") };
        assert_eq!(answer.data["trace"]["solo"]["player"], "coltrane");
        let error = answer.data["trace"]["fallbacks"][0]["error"].as_str().unwrap();
        assert!(error.contains("401"), "{error}");
    });
}

#[test]
fn a_remote_that_dies_mid_stream_hands_over_to_the_next_instrument() {
    runtime().block_on(async {
        let url = dies_mid_stream().await;
        let remote = format!(r#"url = "{url}", model = "any", retries = 0"#);
        let score = write("mid-stream", &fallback_score(&remote));
        let (answer, streamed) = perform(&score, "write a function").await;
        assert_eq!(answer.text, script("coltrane"));
        // The listener got the two pieces, then the stand-in's answer on a fresh line.
        assert_eq!(
            streamed,
            format!("Half an answer\n\n{}", script("coltrane"))
        );
        let trace = &answer.data["trace"];
        let fallback = &trace["fallbacks"][0];
        assert_eq!(fallback["from"], "faraway");
        assert_eq!(fallback["to"], "coltrane");
        assert_eq!(fallback["mid_stream"], true);
        assert_eq!(fallback["pieces"], 2);
        let error = fallback["error"].as_str().unwrap();
        assert!(error.contains("mid-answer after 2 pieces"), "{error}");
        assert_eq!(trace["solo"]["player"], "coltrane");
        let timeline: Vec<&str> = trace["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["event"].as_str())
            .collect();
        assert!(timeline.contains(&"fallback"), "{timeline:?}");
        let rendered = orchestra::trace::render_trace(trace);
        assert!(
            rendered.contains("Faraway → Coltrane (solo, mid-stream after 2 pieces)"),
            "{rendered}"
        );
    });
}

#[test]
fn a_remote_that_never_answers_times_out_and_falls_back() {
    runtime().block_on(async {
        let url = never_answers().await;
        let remote = format!(r#"url = "{url}", model = "any", timeout = "300ms", retries = 1"#);
        let score = write("never", &fallback_score(&remote));
        let started = Instant::now();
        let (answer, streamed) = perform(&score, "write a function").await;
        assert_eq!(answer.text, script("coltrane"));
        assert_eq!(streamed, script("coltrane"), "nothing came from the remote");
        let error = answer.data["trace"]["fallbacks"][0]["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            error.contains("did not send an answer within 0.3 s"),
            "{error}"
        );
        assert!(error.contains("after 2 attempts"), "{error}");
        // Two timeouts and one backoff, then the local model: well under the default.
        assert!(started.elapsed() < Duration::from_secs(10));
    });
}

#[test]
fn a_failure_before_the_first_token_is_retried() {
    runtime().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                read_request(&mut sock).await;
                if n == 0 {
                    let _ = sock
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 8\r\nconnection: close\r\n\r\nstarting")
                        .await;
                    continue;
                }
                let mut body = SSE_HEAD.to_string();
                body.push_str(&sse_chunk("Back "));
                body.push_str(&sse_chunk("again."));
                body.push_str(&format!(
                    "data: {}\n\ndata: [DONE]\n\n",
                    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 4, "completion_tokens": 3}})
                ));
                let _ = sock.write_all(body.as_bytes()).await;
            }
        });
        let remote = format!(r#"url = "http://{addr}/v1", model = "any", retries = 2"#);
        let score = write("retry", &fallback_score(&remote));
        let (answer, _) = perform(&score, "write a function").await;
        assert_eq!(answer.text, "Back again.");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(answer.data["trace"]["solo"]["player"], "faraway");
        assert_eq!(answer.usage.completion_tokens, 3);
    });
}

#[test]
fn check_reports_an_unreachable_remote_without_failing_the_score() {
    runtime().block_on(async {
        // A port nobody listens on.
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let remote = format!(r#"url = "http://{addr}/v1", model = "any""#);
        let score = write("check", &fallback_score(&remote));
        let report = orchestra::score::check(ScoreSource::file(&score), options())
            .await
            .expect("an unreachable remote leaves the score valid");
        let faraway = report.bands[0]
            .instruments
            .iter()
            .find(|i| i.name == "faraway")
            .unwrap();
        assert_eq!(faraway.reachable, Some(false));
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("remote `faraway` is unreachable")),
            "{:?}",
            report.notes
        );
        assert!(report.to_string().contains("unreachable"));

        // Options of local models are refused on a remote one, with the reason.
        let bad = write(
            "check-bad",
            &fallback_score(&format!(
                r#"url = "http://{addr}/v1", model = "any", slots = 2"#
            )),
        );
        let err = orchestra::score::check(ScoreSource::file(&bad), options())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`slots` applies to models on this machine"),
            "{err}"
        );
    });
}
