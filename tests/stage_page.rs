//! The stage: `/api/events` (typed SSE in sequence order, tagged with request ids,
//! resumable), `/api/status`, `orchestra status --brief` against a server with a known
//! history, and the page itself in headless Chromium (a node per instrument, the
//! soloist marked while it solos, the verdict after) — over real HTTP on 127.0.0.1 with
//! real llama.cpp on the rehearsal models.

mod serve_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use orchestra::server::ServeConfig;
use serde_json::{Value, json};
use serve_support::*;

fn chat(model: &str, prompt: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": prompt }] })
}

async fn ask(s: &Served, model: &str, prompt: &str) -> Value {
    let res = client()
        .post(format!("{}/chat/completions", s.url))
        .json(&chat(model, prompt))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// The events of an SSE stream: (id, event type, data) per block.
struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buf: String,
}

impl Events {
    async fn open(s: &Served, last_event_id: Option<u64>) -> Events {
        let mut req = client().get(format!("http://{}/api/events", s.addr));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Events {
            body: res.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next event that has an id (comments and keep-alives skipped).
    async fn next(&mut self) -> (u64, String, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut id = None;
                let mut kind = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if let Some(id) = id {
                    return (id, kind, serde_json::from_str(&data).unwrap());
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.body.next())
                .await
                .expect("an event within a minute")
                .expect("the stream goes on")
                .unwrap();
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[test]
fn two_concurrent_requests_stream_events_in_order_with_their_own_ids_and_resume() {
    runtime().block_on(async {
        let s = serve("stage_events", ServeConfig::default()).await;
        let mut events = Events::open(&s, None).await;
        let (a, b) = tokio::join!(
            ask(&s, "orchestra", "write a function that reverses a string"),
            ask(&s, "orchestra", "a poem about the sea"),
        );
        let ids: Vec<u64> = [&a, &b]
            .iter()
            .map(|r| r["orchestra"]["request_id"].as_u64().unwrap())
            .collect();
        assert_ne!(ids[0], ids[1]);

        let mut seen = Vec::new();
        let mut finished = 0;
        while finished < 2 {
            let e = events.next().await;
            if e.1 == "request_finished" {
                finished += 1;
            }
            seen.push(e);
        }
        // Numbered without gaps, in order; the SSE id and type match the data.
        for w in seen.windows(2) {
            assert_eq!(w[1].0, w[0].0 + 1, "{:?} then {:?}", w[0], w[1]);
        }
        for (id, kind, data) in &seen {
            assert_eq!(data["seq"].as_u64(), Some(*id));
            let typed = data["name"]
                .as_str()
                .unwrap_or(data["type"].as_str().unwrap());
            assert_eq!(typed, kind);
            assert_eq!(data["score_version"], 1);
        }
        // Each request's story, under its own id.
        let story = |id: u64| -> Vec<String> {
            seen.iter()
                .filter(|(_, _, d)| d["request_id"].as_u64() == Some(id))
                .map(|(_, k, _)| k.clone())
                .collect()
        };
        let sections = [("code", "coltrane"), ("creative", "ella")];
        for (i, id) in ids.iter().enumerate() {
            let kinds = story(*id);
            for k in [
                "request_received",
                "routed",
                "solo",
                "generation_progress",
                "played",
                "arrangement",
                "request_finished",
            ] {
                assert!(
                    kinds.contains(&k.to_string()),
                    "{k} missing for request {id}: {kinds:?}"
                );
            }
            assert_eq!(kinds.first().unwrap(), "request_received");
            assert_eq!(kinds.last().unwrap(), "request_finished");
            let solo = seen
                .iter()
                .find(|(_, k, d)| k == "solo" && d["request_id"].as_u64() == Some(*id))
                .unwrap();
            assert_eq!(solo.2["data"]["section"], sections[i].0);
            assert_eq!(solo.2["data"]["player"], sections[i].1);
        }

        // Resume in the middle: the same events again, from the one after.
        let middle = seen[seen.len() / 2].0;
        let mut resumed = Events::open(&s, Some(middle)).await;
        for (id, kind, _) in seen.iter().filter(|(id, _, _)| *id > middle) {
            let e = resumed.next().await;
            assert_eq!((e.0, &e.1), (*id, kind));
        }
    });
}

/// The briefing lines, from the real binary.
fn status_cli(s: &Served, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(["status", "--url", &format!("http://{}", s.addr)])
        .args(args)
        .env_remove("ORCHESTRA_API_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn status_brief_tells_a_known_history_in_four_spoken_lines() {
    runtime().block_on(async {
        let s = serve("stage_brief", ServeConfig::default()).await;
        let empty = status_cli(&s, &["--brief"]);
        assert_eq!(
            empty,
            "STATUS: the stage is empty, 2.0 GiB of memory free.\n\
             ACTIVE: nobody is playing.\n\
             DONE: no requests yet.\n\
             WATCH: nothing to watch.\n"
        );
        ask(&s, "coltrane", "hello").await;
        let code = ask(&s, "orchestra", "write a function that reverses a string").await;
        assert_eq!(code["choices"][0]["message"]["content"], script("coltrane"));
        // Someone who is not playing, asked for by a wrong name: not counted as done.
        let missing = client()
            .post(format!("{}/chat/completions", s.url))
            .json(&chat("nobody", "hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);

        let report: Value = serde_json::from_str(&status_cli(&s, &["--json"])).unwrap();
        let on_stage: Vec<&str> = report["instruments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "resident")
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        let players: Vec<&str> = code["orchestra"]["trace"]["instruments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        for p in &players {
            assert!(on_stage.contains(p), "{p} not resident: {on_stage:?}");
        }
        assert_eq!(report["recent"][0]["soloist"], "coltrane");
        assert_eq!(report["recent"][0]["section"], "code");
        assert!(
            report["instruments"][0]["footprint_bytes"]
                .as_u64()
                .unwrap()
                > 0
        );

        let words = ["no", "one", "two", "three", "four", "five", "six"];
        let brief = status_cli(&s, &["--brief"]);
        let lines: Vec<&str> = brief.lines().collect();
        assert_eq!(lines.len(), 4, "{brief}");
        let status = format!("STATUS: {} instruments on stage, ", words[on_stage.len()]);
        assert!(lines[0].starts_with(&status), "{brief}");
        assert!(lines[0].ends_with(" of 2.0 GiB."), "{brief}");
        assert_eq!(lines[1], "ACTIVE: nobody is playing.");
        assert_eq!(lines[2], "DONE: two requests, none failed.");
        assert_eq!(lines[3], "WATCH: nothing to watch.");

        let table = status_cli(&s, &[]);
        assert!(table.contains("score.lua` version 1"), "{table}");
        assert!(table.contains("coltrane"), "{table}");
    });
}

/// A score whose `long solo` requests announce a route and a solo by `drone` (long
/// generations, until the client goes away), then a review verdict; every other request plays the arrangement.
fn page_score() -> String {
    let text = score_text("v1");
    let marker = "    if req.prompt:find(\"hold\") then";
    assert!(text.contains(marker));
    let long = r#"    if req.prompt:find("long solo") then
      local trace = require("orchestra.trace")
      trace.emit(req, "routed", { section = "analysis", rule = 1, name = "long words" })
      trace.emit(req, "solo", { player = "drone", section = "analysis" })
      -- Long enough for Chromium to look a few times (the test cancels it).
      local text = ""
      for _ = 1, 40 do
        text = band.drone:generate(req.prompt, { ignore_eos = true, max_tokens = 7000 })
      end
      trace.emit(req, "review", { reviewer = "mingus", author = "drone" })
      trace.emit(req, "verdict", { reviewer = "mingus", verdict = "approve" })
      return text
    end
"#;
    text.replace(marker, &format!("{long}{marker}"))
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| PathBuf::from(c))
    })
}

/// Headless Chromium on `url`: the DOM after the page's scripts ran, and a picture.
/// `--timeout`, not `--virtual-time-budget`: virtual time never runs out while the
/// page holds its `EventSource` open.
fn chromium_run(url: &str, extra: &[String]) -> String {
    let browser = chromium().expect("chromium is installed (apt-get install chromium)");
    let profile = scratch().join(format!("chromium-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&profile);
    let out = Command::new("timeout")
        .arg("90")
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--timeout=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM once the page has drawn its first picture (Chromium may dump it before the
/// page's first `/api/status` answer arrived: then it looks again).
fn dump_dom(url: &str) -> String {
    let mut dom = String::new();
    for _ in 0..5 {
        dom = chromium_run(url, &["--dump-dom".to_string()]);
        if dom.contains("id=\"node-") {
            break;
        }
    }
    dom
}

fn screenshot(url: &str, path: &Path, size: &str) {
    let _ = std::fs::remove_file(path);
    chromium_run(
        url,
        &[
            format!("--screenshot={}", path.display()),
            format!("--window-size={size}"),
        ],
    );
    assert!(path.is_file(), "no screenshot at {}", path.display());
}

/// The opening tag of the element with this id.
fn tag<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

#[test]
#[ignore = "needs Debian's chromium: apt-get install chromium"]
fn the_page_shows_every_instrument_the_soloist_while_it_solos_and_the_verdict() {
    runtime().block_on(async {
        let score = write_score("stage_page", "v1");
        std::fs::write(&score, page_score()).unwrap();
        let s = serve_file(&score, ServeConfig::default()).await;
        let page = format!("http://{}/", s.addr);
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");

        // A long solo, in flight while the page looks.
        let long = {
            let url = s.url.clone();
            tokio::spawn(async move {
                client()
                    .post(format!("{url}/chat/completions"))
                    .json(&chat("orchestra", "long solo please"))
                    .send()
                    .await
            })
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st: Value = client()
                .get(format!("http://{}/api/status", s.addr))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let soloing = st["active"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["soloist"] == "drone" && a["phase"] == "soloing");
            let drone = st["instruments"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["name"] == "drone")
                .unwrap();
            if soloing && drone["state"] == "playing" {
                break;
            }
            assert!(Instant::now() < deadline, "the solo never started: {st}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let during = tokio::task::spawn_blocking({
            let page = page.clone();
            move || dump_dom(&page)
        })
        .await
        .unwrap();
        assert!(
            !long.is_finished(),
            "the solo ended before the page looked: make it longer"
        );
        screenshot_both(&page, &target).await;
        let info = s.conductor.info().await.unwrap();
        for i in &info.instruments {
            tag(&during, &format!("node-{}", i.name));
        }
        let drone = tag(&during, "node-drone");
        assert!(drone.contains("soloing"), "{drone}");
        assert!(drone.contains("data-state=\"playing\""), "{drone}");
        assert!(
            during.contains("rule long words"),
            "the routed section's rule is shown"
        );
        let coltrane = tag(&during, "node-coltrane");
        assert!(!coltrane.contains("soloing"), "{coltrane}");
        long.abort();

        // After an arrangement: its soloist and the reviewer's verdict.
        let body = ask(&s, "orchestra", "write a function that reverses a string").await;
        let id = body["orchestra"]["request_id"].as_u64().unwrap();
        let verdict = body["orchestra"]["trace"]["reviews"][0]["verdict"]
            .as_str()
            .expect("the arrangement was reviewed")
            .to_string();
        let after = tokio::task::spawn_blocking({
            let page = page.clone();
            move || dump_dom(&page)
        })
        .await
        .unwrap();
        let row = after
            .find(&format!("data-request=\"{id}\""))
            .map(|at| &after[at..(at + 600).min(after.len())])
            .unwrap_or_else(|| panic!("request {id} is not among the recent ones:\n{after}"));
        assert!(row.contains("Coltrane"), "{row}");
        assert!(row.contains(&format!("verdict-{verdict}")), "{row}");
        let drone = tag(&after, "node-drone");
        assert!(!drone.contains("soloing"), "{drone}");
        assert!(after.contains("version 1"));
        let mut states = BTreeMap::new();
        for i in &info.instruments {
            let t = tag(&after, &format!("node-{}", i.name));
            let state = t
                .split("data-state=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            states.insert(i.name.clone(), state.to_string());
        }
        assert_eq!(states["coltrane"], "resident", "{states:?}");
    });
}

/// Pictures of the page mid-solo: a laptop window and a narrow canvas panel.
async fn screenshot_both(page: &str, target: &Path) {
    let page = page.to_string();
    let target = target.to_path_buf();
    tokio::task::spawn_blocking(move || {
        screenshot(&page, &target.join("stage-page.png"), "1200,800");
        screenshot(&page, &target.join("stage-page-narrow.png"), "400,900");
    })
    .await
    .unwrap();
}
