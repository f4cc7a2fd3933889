//! Safe by default, verified: `orchestra serve` listens on loopback unless given a key,
//! compares keys in constant time and answers wrong ones 401, limits bodies (413) and
//! messages per request (400), serves shared scores in the sandbox, and every endpoint
//! that reads or changes the band needs the key when one is set. The sandbox itself —
//! every escape a score may try, runaway loops, memory bombs — is tested in
//! `tests/score_sandbox.rs`; here only that the server plays scores inside it.

mod serve_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Parser;
use orchestra::server::{ServeConfig, check_bind, keys_match};
use serde_json::{Value, json};
use serve_support::*;
use tokio::io::AsyncBufReadExt;

fn chat(model: &str, prompt: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": prompt }] })
}

/// `orchestra serve`'s arguments, as clap parses them.
#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    args: orchestra::cli::serve::ServeArgs,
}

#[test]
fn the_server_listens_on_loopback_by_default_and_refuses_the_network_without_a_key() {
    let parsed = Serve::parse_from(["serve", "score.lua"]);
    assert!(parsed.args.host.is_loopback(), "{}", parsed.args.host);
    // (host, key, allowed)
    let cases: &[(&str, Option<&str>, bool)] = &[
        ("127.0.0.1", None, true),
        ("::1", None, true),
        ("0.0.0.0", None, false),
        ("::", None, false),
        ("192.168.1.20", None, false),
        ("0.0.0.0", Some(""), false),
        ("0.0.0.0", Some("sesame"), true),
        ("::", Some("sesame"), true),
    ];
    for (host, key, allowed) in cases {
        let result = check_bind(host.parse().unwrap(), *key);
        assert_eq!(
            result.is_ok(),
            *allowed,
            "{host} with key {key:?}: {result:?}"
        );
        if let Err(e) = result {
            assert!(e.contains("--api-key") && e.contains("127.0.0.1"), "{e}");
        }
    }
    // The binary refuses before it loads anything.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args([
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "no-such-score.lua",
        ])
        .env_remove("ORCHESTRA_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on `0.0.0.0`"),
        "{stderr}"
    );
}

#[test]
fn keys_are_compared_in_constant_time() {
    let key = vec![b'k'; 4096];
    let mut first = key.clone();
    first[0] = b'x';
    let mut last = key.clone();
    last[4095] = b'x';
    assert!(keys_match(&key, &key.clone()));
    assert!(!keys_match(&key, &first));
    assert!(!keys_match(&key, &last));
    assert!(!keys_match(&key, &key[..4095]));
    assert!(!keys_match(b"", &key));
    // A compare that stopped at the first difference would refuse `first` about 4096
    // times faster than `last`; the fastest of many runs of each stay close.
    let fastest = |guess: &[u8]| {
        (0..3000)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(keys_match(
                    std::hint::black_box(&key),
                    std::hint::black_box(guess),
                ));
                t.elapsed()
            })
            .min()
            .unwrap()
    };
    let (mut a, mut b) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        a = a.min(fastest(&first));
        b = b.min(fastest(&last));
    }
    let ratio = b.as_secs_f64() / a.as_secs_f64().max(1e-9);
    assert!(
        (0.33..3.0).contains(&ratio),
        "first byte wrong: {a:?}, last byte wrong: {b:?}"
    );
}

#[test]
fn wrong_keys_get_401_and_the_right_one_gets_in() {
    runtime().block_on(async {
        let config = ServeConfig {
            api_key: Some("sesame-0123456789".into()),
            ..ServeConfig::default()
        };
        let s = serve("wrong_keys", config).await;
        let url = format!("{}/models", s.url);
        let http = client();
        // (Authorization header, ?key=, status)
        let cases: &[(Option<&str>, Option<&str>, u16)] = &[
            (None, None, 401),
            (Some("Bearer "), None, 401),
            (Some("Bearer sesame-012345678"), None, 401),
            (Some("Bearer sesame-01234567890"), None, 401),
            (Some("Bearer sesame-0123456780"), None, 401),
            (Some("Bearer SESAME-0123456789"), None, 401),
            (Some("Basic sesame-0123456789"), None, 401),
            (Some("sesame-0123456789"), None, 401),
            (None, Some("sesame-012345678"), 401),
            (Some("Bearer sesame-0123456789"), None, 200),
            (None, Some("sesame-0123456789"), 200),
            (None, Some("sesame%2D0123456789"), 200),
        ];
        for (auth, key, status) in cases {
            let mut req = http.get(match key {
                Some(k) => format!("{url}?key={k}"),
                None => url.clone(),
            });
            if let Some(a) = auth {
                req = req.header("authorization", *a);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status().as_u16(), *status, "{auth:?} {key:?}");
            if *status == 401 {
                let body: Value = res.json().await.unwrap();
                assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
                assert!(
                    !body.to_string().contains("sesame"),
                    "the key leaks: {body}"
                );
            }
        }
    });
}

#[test]
fn bodies_over_the_limit_get_413_and_too_many_messages_get_400() {
    runtime().block_on(async {
        let config = ServeConfig {
            body_limit: 64 << 10,
            max_messages: 8,
            ..ServeConfig::default()
        };
        let s = serve("limits", config).await;
        let post = |body: Value| {
            client()
                .post(format!("{}/chat/completions", s.url))
                .json(&body)
                .send()
        };
        let res = post(chat("coltrane", &"x".repeat(100 << 10))).await.unwrap();
        assert_eq!(res.status(), 413);
        let messages = |n: usize| {
            (0..n)
                .map(|i| json!({ "role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "hi" }))
                .collect::<Vec<_>>()
        };
        let res = post(json!({ "model": "coltrane", "messages": messages(9), "max_tokens": 2 }))
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "too_many_messages", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("9 messages") && message.contains("(8)"), "{message}");
        let res = post(json!({ "model": "coltrane", "messages": messages(7), "max_tokens": 2 }))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "at the limit a request is served");
        assert_eq!(ServeConfig::default().max_messages, 1024);
    });
}

#[test]
fn a_served_score_plays_in_the_sandbox() {
    runtime().block_on(async {
        let dir = scratch().join("sandboxed");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let score = dir.join("score.lua");
        std::fs::write(
            &score,
            r#"local band = orchestra.band { memory = "1GiB" }
return {
  perform = function(req)
    if req.prompt == "read" then return io.open("/etc/passwd"):read("a") end
    if req.prompt == "run" then return tostring(os.execute("true")) end
    return "fine"
  end,
}
"#,
        )
        .unwrap();
        // The real binary with its default flags: what a user who runs someone else's
        // score gets.
        let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestra"))
            .args(["serve", "--port", "0", "--no-watch"])
            .arg(&score)
            .env_remove("ORCHESTRA_API_KEY")
            .env("ORCHESTRA_HOME", dir.join("home"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = stdout.next_line().await.unwrap() {
                if let Some(at) = line.find("http://") {
                    return line[at..].trim().to_string();
                }
            }
            panic!("the server printed no URL");
        })
        .await
        .expect("the server starts");
        for (prompt, refusal) in [
            ("read", "`/etc/passwd` is outside the score's folder"),
            ("run", "`os.execute` is disabled in shared scores"),
        ] {
            let res = client()
                .post(format!("{url}/chat/completions"))
                .json(&chat("orchestra", prompt))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 500, "{prompt}");
            let body: Value = res.json().await.unwrap();
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(refusal), "{prompt}: {message}");
            assert!(message.contains("--allow-unsafe"), "{prompt}: {message}");
            assert!(!message.contains("root:"), "{message}");
        }
        let _ = server.start_kill();
    });
}

#[test]
fn every_endpoint_that_reads_or_changes_the_band_needs_the_key() {
    runtime().block_on(async {
        let config = ServeConfig {
            api_key: Some("sesame".into()),
            ..ServeConfig::default()
        };
        let s = serve("band_endpoints", config).await;
        let base = format!("http://{}", s.addr);
        let http = client();
        // Known endpoints: 401 without the key, anything but 401 with it.
        let known: &[(&str, &str, Value)] = &[
            ("POST", "/v1/chat/completions", chat("coltrane", "hi")),
            (
                "POST",
                "/v1/completions",
                json!({ "model": "coltrane", "prompt": "hi", "max_tokens": 2 }),
            ),
            (
                "POST",
                "/v1/embeddings",
                json!({ "model": "duke", "input": "hi" }),
            ),
            ("GET", "/v1/models", Value::Null),
            ("GET", "/api/status", Value::Null),
            ("GET", "/metrics", Value::Null),
        ];
        for (method, path, body) in known {
            let req = |key: Option<&str>| {
                let mut r = http.request(method.parse().unwrap(), format!("{base}{path}"));
                if !body.is_null() {
                    r = r.json(body);
                }
                if let Some(k) = key {
                    r = r.bearer_auth(k);
                }
                r.send()
            };
            assert_eq!(req(None).await.unwrap().status(), 401, "{method} {path}");
            let with = req(Some("sesame")).await.unwrap().status();
            assert!(with.is_success(), "{method} {path} with the key: {with}");
        }
        // The event stream needs it too (it would tell who plays what).
        let events = http.get(format!("{base}/api/events")).send().await.unwrap();
        assert_eq!(events.status(), 401);
        // Whatever else lives under /api or /v1 — pinning, unloading, switching the
        // lead, voice — must never answer a client without the key: 401, or 404 where
        // no such endpoint exists.
        let band_changes = [
            "/api/voice",
            "/api/pin",
            "/api/pin/coltrane",
            "/api/unpin/coltrane",
            "/api/unload/coltrane",
            "/api/evict/coltrane",
            "/api/lead",
            "/api/lead/code",
            "/api/instruments/coltrane",
            "/api/instruments/coltrane/pin",
            "/api/score/reload",
            "/api/reload",
            "/v1/models/coltrane",
        ];
        for path in band_changes {
            for method in ["POST", "PUT", "DELETE", "GET"] {
                let status = http
                    .request(method.parse().unwrap(), format!("{base}{path}"))
                    .json(&json!({ "model": "coltrane", "section": "code", "text": "hi" }))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16();
                assert!(
                    status == 401 || status == 404,
                    "{method} {path} without the key answered {status}"
                );
            }
        }
        // The page and the health check stay open (the page asks for the key itself).
        for path in ["/", "/health"] {
            let status = http
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200, "{path}");
        }
    });
}
