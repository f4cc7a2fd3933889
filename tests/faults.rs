//! Fault injection: what `orchestra serve` does when something under it breaks — a GGUF
//! replaced by a truncated file, a model that fails to load in the middle of an
//! arrangement, a full disk during a pull, a score that errors or runs out of Lua
//! memory in one request, SIGTERM while a stream plays. Each fault hits one request (or
//! one download); the test then checks that the error says what happened and that
//! everything else keeps playing. Real HTTP on 127.0.0.1, real llama.cpp inference.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{runtime, scratch};
use orchestra::events::EventKind;
use orchestra::score::{Conductor, ScoreOptions, ScoreSource};
use orchestra::server::{AppState, ServeConfig};
use orchestra::synth::TensorType;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const VICTIM: &str = "Victim plays a phrase it will not play twice.";
const COLTRANE: &str = "Coltrane answers with a steady line in the code section.";
const ELLA: &str = "Ella sings the creative part, bright and clear.";

/// A fresh folder for one test.
fn test_dir(test: &str) -> PathBuf {
    let dir = scratch().join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn options() -> ScoreOptions {
    ScoreOptions::default()
        .with_rehearsal_dir(scratch().join("band"))
        .with_printer(Arc::new(|_: &str| {}))
}

/// A running in-process server.
struct Served {
    url: String,
    conductor: Conductor,
    state: AppState,
}

async fn serve(score: &Path, options: ScoreOptions) -> Served {
    let conductor = Conductor::start(ScoreSource::file(score), options)
        .await
        .expect("the test score loads");
    let config = ServeConfig::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::with_conductor(&config, conductor.clone());
    let s = state.clone();
    tokio::spawn(async move {
        orchestra::server::serve(listener, s, &config, std::future::pending())
            .await
            .unwrap();
    });
    Served {
        url: format!("http://{addr}/v1"),
        conductor,
        state,
    }
}

fn chat(model: &str, prompt: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": prompt }] })
}

/// POSTs a chat request; returns the status and the JSON body.
async fn ask(s: &Served, body: &Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/chat/completions", s.url))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

fn content(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

fn lua_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A band of three rehearsal models, `victim` first in the code section (it solos
/// there until it fails), and a perform that plays solo-only arrangements.
fn band_score(victim: &Path) -> String {
    let coltrane = common::rehearsal("coltrane-faults", COLTRANE, TensorType::Q8_0);
    let ella = common::rehearsal("ella-faults", ELLA, TensorType::Q8_0);
    format!(
        r#"local route = require("orchestra.route")
local arrange = require("orchestra.arrange")
local band = orchestra.band {{ memory = "2GiB", sections = {{ "code", "creative" }} }}
band:add("victim", {{ model = {victim}, section = "code", context = 512, slots = 2, sampling = {{ temperature = 0 }} }})
band:add("coltrane", {{ model = {coltrane}, section = "code", context = 512, slots = 2, sampling = {{ temperature = 0 }} }})
band:add("ella", {{ model = {ella}, section = "creative", context = 512, slots = 2, sampling = {{ temperature = 0 }} }})
local router = route.rules({{ {{ otherwise = "code" }} }}, {{ band = band }})
return {{
  perform = function(req)
    return arrange.perform(band, req, {{ router = router, comp = false, review = false }})
  end,
}}
"#,
        victim = lua_path(victim),
        coltrane = lua_path(&coltrane),
        ella = lua_path(&ella),
    )
}

/// Copies the victim's model into the test folder and writes the band's score there.
fn band(test: &str) -> (PathBuf, PathBuf) {
    let dir = test_dir(test);
    let victim = dir.join("victim.gguf");
    std::fs::copy(
        common::rehearsal("victim", VICTIM, TensorType::Q8_0),
        &victim,
    )
    .unwrap();
    let score = dir.join("score.lua");
    std::fs::write(&score, band_score(&victim)).unwrap();
    (victim, score)
}

/// Replaces `path` by `bytes` the way a copy does: a new file renamed over the old one
/// (a model still mapped keeps the old bytes).
fn replace_with(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `whole` (the file at `path`) with its first tensor's type set to 200.
fn with_unknown_tensor_type(path: &Path, whole: &[u8]) -> Vec<u8> {
    let header = orchestra::gguf::read_header(path).unwrap();
    let first = &header.tensors[0];
    let mut name = (first.name.len() as u64).to_le_bytes().to_vec();
    name.extend_from_slice(first.name.as_bytes());
    let at = whole
        .windows(name.len())
        .position(|w| w == name.as_slice())
        .expect("the first tensor's name is in the header");
    let ty = at + name.len() + 4 + 8 * first.dims.len();
    let mut out = whole.to_vec();
    out[ty..ty + 4].copy_from_slice(&200u32.to_le_bytes());
    out
}

/// Evicts `name` so that its next request loads the file again; whether it was resident.
async fn evict(s: &Served, name: &str) -> bool {
    let h = s.conductor.instrument(name).await.unwrap().unwrap();
    h.stage.evict(name).unwrap()
}

#[test]
fn a_gguf_truncated_between_two_loads_fails_clearly_and_the_others_keep_playing() {
    runtime().block_on(async {
        let (victim, score) = band("truncated");
        let s = serve(&score, options()).await;
        let (status, body) = ask(&s, &chat("victim", "hello")).await;
        assert_eq!((status, content(&body)), (200, VICTIM), "{body}");
        let whole = std::fs::read(&victim).unwrap();
        // Cut in the tensor data and in the header (our reader refuses both before
        // llama.cpp sees the file), inside the magic, and a whole file whose first
        // tensor has a type llama.cpp does not know (llama.cpp refuses it).
        let breaks = [
            whole[..whole.len() / 2].to_vec(),
            whole[..64].to_vec(),
            whole[..3].to_vec(),
            with_unknown_tensor_type(&victim, &whole),
        ];
        for broken in breaks {
            let keep = broken.len();
            evict(&s, "victim").await;
            replace_with(&victim, &whole);
            let (status, _) = ask(&s, &chat("victim", "hello")).await;
            assert_eq!(status, 200, "the whole file plays again");
            assert!(evict(&s, "victim").await, "the victim was resident");
            replace_with(&victim, &broken);
            let (status, body) = ask(&s, &chat("victim", "hello")).await;
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert_eq!(status, 500, "cut at {keep}: {body}");
            assert!(
                message.contains("`victim`") && message.len() > 30,
                "cut at {keep}: the error names the model and says why: {message}"
            );
            assert!(!message.contains("panic"), "{message}");
            // The rest of the band plays on, directly and through the arrangement.
            let (status, body) = ask(&s, &chat("ella", "hello")).await;
            assert_eq!((status, content(&body)), (200, ELLA), "{body}");
            let (status, body) = ask(&s, &chat("coltrane", "hello")).await;
            assert_eq!((status, content(&body)), (200, COLTRANE), "{body}");
        }
        assert_eq!(s.state.admission.in_flight(), 0);
        assert_eq!(
            s.conductor.stage_reserved(),
            0,
            "no reservation left behind"
        );
    });
}

#[test]
fn a_model_that_fails_to_load_mid_arrangement_hands_its_solo_to_the_next_of_its_section() {
    runtime().block_on(async {
        let (victim, score) = band("mid_arrangement");
        let s = serve(&score, options()).await;
        let (status, body) = ask(&s, &chat("orchestra/code", "write a loop")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["orchestra"]["soloist"], "victim", "{body}");
        assert_eq!(content(&body), VICTIM);
        // Between two requests the victim leaves the stage and its file breaks.
        assert!(evict(&s, "victim").await, "the victim was resident");
        let whole = std::fs::read(&victim).unwrap();
        replace_with(&victim, &whole[..whole.len() / 3]);
        let mut events = s.conductor.events().subscribe();
        let (status, body) = ask(&s, &chat("orchestra/code", "write a loop")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(content(&body), COLTRANE, "the next of the section played");
        let o = &body["orchestra"];
        assert_eq!(o["soloist"], "coltrane", "{o:#}");
        let fallback = &o["trace"]["fallbacks"][0];
        assert_eq!(fallback["from"], "victim", "{o:#}");
        assert_eq!(fallback["to"], "coltrane", "{o:#}");
        assert!(
            fallback["error"]
                .as_str()
                .is_some_and(|e| e.contains("victim")),
            "the trace says why: {fallback}"
        );
        let mut failed_load = false;
        loop {
            match events.try_recv() {
                Ok(e) => {
                    if let EventKind::ModelLoadFailed { model, .. } = &e.kind {
                        failed_load |= model == "victim";
                    }
                }
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        assert!(failed_load, "the failed load was announced");
    });
}

#[test]
fn a_score_that_errors_in_perform_fails_that_request_with_500_and_serves_the_next() {
    runtime().block_on(async {
        let dir = test_dir("perform_error");
        let score = dir.join("score.lua");
        std::fs::write(
            &score,
            r#"local band = orchestra.band { memory = "1GiB" }
return {
  perform = function(req)
    if req.prompt:find("boom") then
      error("the drummer dropped a stick")
    end
    return "fine"
  end,
}
"#,
        )
        .unwrap();
        let s = serve(&score, options()).await;
        for stream in [false, true] {
            let mut req = chat("orchestra", "boom");
            req["stream"] = json!(stream);
            let res = reqwest::Client::new()
                .post(format!("{}/chat/completions", s.url))
                .json(&req)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            // A stream that fails before its first piece may still answer 200: then
            // its one event is the error, followed by [DONE].
            let error: Value = if stream && status == 200 {
                let events: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
                serde_json::from_str(events[events.len() - 2]).unwrap()
            } else {
                assert_eq!(status, 500, "{text}");
                serde_json::from_str(&text).unwrap()
            };
            let message = error["error"]["message"].as_str().unwrap();
            assert!(message.contains("the drummer dropped a stick"), "{message}");
            assert!(message.contains("score.lua:5"), "file and line: {message}");
            assert_eq!(error["error"]["code"], "score_error");
            let (status, body) = ask(&s, &chat("orchestra", "hello")).await;
            assert_eq!((status, content(&body)), (200, "fine"), "{body}");
        }
        assert_eq!(s.state.admission.in_flight(), 0);
    });
}

#[test]
fn a_lua_memory_blowup_fails_its_request_while_the_others_go_on() {
    runtime().block_on(async {
        let dir = test_dir("memory_blowup");
        let score = dir.join("score.lua");
        let drone = common::tiny_random(TensorType::F32);
        std::fs::write(
            &score,
            format!(
                r#"local band = orchestra.band {{ memory = "1GiB" }}
band:add("drone", {{ model = {drone}, section = "analysis", context = 2048, slots = 2,
  sampling = {{ temperature = 0 }} }})
return {{
  perform = function(req)
    if req.prompt:find("hoard") then
      hoard = hoard or {{}}
      while true do hoard[#hoard + 1] = string.rep("x", 1 << 20) .. #hoard end
    end
    if req.prompt:find("hold") then
      req:write("holding:")
      local text = band.drone:generate(req.prompt, {{ ignore_eos = true, max_tokens = 400 }})
      return "held " .. #text
    end
    return "fine"
  end,
}}
"#,
                drone = lua_path(&drone),
            ),
        )
        .unwrap();
        let s = serve(&score, options().with_memory_limit(48 << 20)).await;
        // A request in flight on the VM that is about to blow up.
        let mut held = chat("orchestra", "hold");
        held["stream"] = json!(true);
        let mut stream = reqwest::Client::new()
            .post(format!("{}/chat/completions", s.url))
            .json(&held)
            .send()
            .await
            .unwrap();
        let mut seen = String::new();
        while !seen.contains("holding:") {
            let chunk = stream.chunk().await.unwrap().expect("the stream is open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        let (status, body) = ask(&s, &chat("orchestra", "hoard")).await;
        assert_eq!(status, 500, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("ran out of Lua memory"), "{message}");
        // The request in flight finishes, and the next one is served.
        while let Some(chunk) = stream.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(seen.contains("\"finish_reason\":\"stop\""), "{seen}");
        assert!(seen.trim_end().ends_with("data: [DONE]"), "{seen}");
        assert!(!seen.contains("\"error\""), "{seen}");
        let (status, body) = ask(&s, &chat("orchestra", "hello")).await;
        assert_eq!((status, content(&body)), (200, "fine"), "{body}");
        assert_eq!(s.state.admission.in_flight(), 0);
    });
}

// ---------------------------------------------------------------------------------------
// A full disk during a pull
// ---------------------------------------------------------------------------------------

/// A mock Hub serving one repo with one file (info, resolve with ETag, ranges), and the
/// `Range` headers it was asked for.
struct MockHub {
    url: String,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
}

const REPO: &str = "org/full-disk";
const FILE: &str = "big-Q8_0.gguf";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn blob_bytes() -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = b"GGUF".to_vec();
    while out.len() < 300_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(300_000);
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl MockHub {
    async fn start() -> MockHub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let seen = ranges.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let _ = answer(socket, &seen).await;
                });
            }
        });
        MockHub { url, ranges }
    }
}

async fn answer(
    mut socket: tokio::net::TcpStream,
    seen: &Mutex<Vec<Option<String>>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if socket.read(&mut byte).await? == 0 || head.len() > 1 << 16 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let bytes = blob_bytes();
    let sha = sha256_hex(&bytes);
    let (status, mut extra, body): (u16, Vec<(String, String)>, Vec<u8>) =
        if path.starts_with(&format!("/api/models/{REPO}")) {
            let info = json!({ "id": REPO, "sha": COMMIT, "siblings": [{ "rfilename": FILE }] });
            (
                200,
                vec![("Content-Type".into(), "application/json".into())],
                info.to_string().into_bytes(),
            )
        } else if path.starts_with(&format!("/{REPO}/resolve/")) && path.ends_with(FILE) {
            let range = headers.get("range").cloned();
            if method == "GET" {
                seen.lock().unwrap().push(range.clone());
            }
            let from: usize = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.split('-').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let mut h = vec![
                ("ETag".into(), format!("\"{sha}\"")),
                ("X-Repo-Commit".into(), COMMIT.into()),
                ("Accept-Ranges".into(), "bytes".into()),
                ("Content-Type".into(), "application/octet-stream".into()),
            ];
            if from > 0 {
                h.push((
                    "Content-Range".into(),
                    format!("bytes {from}-{}/{}", bytes.len() - 1, bytes.len()),
                ));
                (206, h, bytes[from..].to_vec())
            } else {
                (200, h, bytes)
            }
        } else {
            (404, Vec::new(), b"{\"error\":\"no such route\"}".to_vec())
        };
    extra.push(("Content-Length".into(), body.len().to_string()));
    let mut out = format!("HTTP/1.1 {status} X\r\n");
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    socket.write_all(out.as_bytes()).await?;
    if method != "HEAD" {
        socket.write_all(&body).await?;
    }
    socket.shutdown().await
}

/// The bytes the child may write before the disk is "full".
const DISK_ROOM: u64 = 64 << 10;
const CHILD_HUB: &str = "ORCHESTRA_FAULTS_HUB";
const CHILD_CACHE: &str = "ORCHESTRA_FAULTS_CACHE";

/// The half of the next test that runs in a child process: a file size limit
/// (`RLIMIT_FSIZE`) makes every write past [`DISK_ROOM`] fail as on a full disk. Does
/// nothing unless the parent started it.
#[test]
fn a_pull_under_a_file_size_limit_runs_only_as_the_child_of_the_full_disk_test() {
    let (Ok(hub), Ok(cache)) = (std::env::var(CHILD_HUB), std::env::var(CHILD_CACHE)) else {
        return;
    };
    // SAFETY: plain libc calls on this process's own limits and signal disposition,
    // made before any other thread of this test writes a file.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: DISK_ROOM,
            rlim_max: DISK_ROOM,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let cfg = orchestra::hub::HubConfig::new(&hub, PathBuf::from(cache));
    let reference = orchestra::hub::ModelRef::parse(&format!("hf:{REPO}/{FILE}")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(orchestra::hub::resolve(
        &reference,
        &cfg,
        orchestra::hub::Progress::hidden(),
    ));
    match result {
        Ok(p) => println!("PULLED: {}", p.display()),
        Err(e) => println!("PULL FAILED: {e}"),
    }
}

#[test]
fn a_disk_that_fills_up_during_a_pull_gives_a_clear_error_and_keeps_the_partial_file() {
    runtime().block_on(async {
        let hub = MockHub::start().await;
        let cache = test_dir("full_disk").join("hub");
        let child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_pull_under_a_file_size_limit_runs_only_as_the_child_of_the_full_disk_test",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_HUB, &hub.url)
            .env(CHILD_CACHE, &cache)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(120), child)
            .await
            .expect("the child pull ends")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.find("PULL").map(|at| &l[at..]))
            .unwrap_or_else(|| panic!("the child reports its pull: {stdout}"));
        let message = line
            .strip_prefix("PULL FAILED: ")
            .unwrap_or_else(|| panic!("the pull cannot succeed on a full disk: {line}"));
        assert!(message.contains(".incomplete"), "names the file: {message}");
        assert!(
            message.contains("File too large") || message.contains("No space left"),
            "says why: {message}"
        );
        assert!(
            message.contains("HF_HUB_CACHE"),
            "says what to do: {message}"
        );
        // The partial file stays for the next run to resume.
        let sha = sha256_hex(&blob_bytes());
        let blobs = cache
            .join(format!("models--{}", REPO.replace('/', "--")))
            .join("blobs");
        let partial = blobs.join(format!("{sha}.incomplete"));
        let kept = std::fs::metadata(&partial)
            .unwrap_or_else(|e| panic!("{} is kept: {e}", partial.display()))
            .len();
        assert!(kept > 0 && kept <= DISK_ROOM, "{kept} bytes kept");
        // With room again, the pull resumes where it stopped.
        let cfg = orchestra::hub::HubConfig::new(&hub.url, &cache);
        let reference = orchestra::hub::ModelRef::parse(&format!("hf:{REPO}/{FILE}")).unwrap();
        let path = orchestra::hub::resolve(&reference, &cfg, orchestra::hub::Progress::hidden())
            .await
            .unwrap();
        assert_eq!(std::fs::read(path).unwrap(), blob_bytes());
        let ranges = hub.ranges.lock().unwrap().clone();
        assert_eq!(
            ranges.last().cloned().flatten(),
            Some(format!("bytes={kept}-{}", blob_bytes().len() - 1)),
            "{ranges:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// SIGTERM while a stream plays
// ---------------------------------------------------------------------------------------

#[test]
fn sigterm_during_a_stream_lets_it_finish_ends_event_streams_then_the_server_exits() {
    runtime().block_on(async {
        let dir = test_dir("sigterm");
        let drone = common::tiny_random(TensorType::F32);
        let score = dir.join("score.lua");
        std::fs::write(
            &score,
            format!(
                r#"local band = orchestra.band {{ memory = "1GiB" }}
band:add("drone", {{ model = {drone}, section = "analysis", context = 8192, slots = 1,
  sampling = {{ temperature = 0 }} }})
return {{ perform = function(req) return "fine" end }}
"#,
                drone = lua_path(&drone),
            ),
        )
        .unwrap();
        let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestra"))
            .args(["serve", "--port", "0", "--no-watch"])
            .arg(&score)
            .env("ORCHESTRA_HOME", dir.join("home"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
        let mut stderr = tokio::io::BufReader::new(server.stderr.take().unwrap()).lines();
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
        let mut req = chat("drone", "play on");
        req["stream"] = json!(true);
        req["ignore_eos"] = json!(true);
        req["max_tokens"] = json!(8000);
        let http = reqwest::Client::new();
        let mut stream = http
            .post(format!("{url}/chat/completions"))
            .json(&req)
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        let mut seen =
            String::from_utf8_lossy(&stream.chunk().await.unwrap().unwrap()).into_owned();
        // An event stream is open too (what the stage page and `orchestra listen` keep):
        // it is not a request in flight and must not hold the shutdown open.
        let mut events = http
            .get(format!("{}/api/events", url.trim_end_matches("/v1")))
            .send()
            .await
            .unwrap();
        assert_eq!(events.status(), 200);
        let pid = server.id().unwrap() as libc::pid_t;
        // SAFETY: a signal to the child this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let mut said = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = stderr.next_line().await.unwrap() {
                let stopping = line.starts_with("stopping");
                said.push(line);
                if stopping {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the server says it is stopping: {said:?}"));
        // The event stream ends at once, with a last `closing` event.
        let mut heard = String::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(chunk) = events.chunk().await.unwrap() {
                heard.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the event stream ends when the server stops: {heard}"));
        assert!(heard.contains("event: closing"), "{heard}");
        // The stream is still playing after the server said it is stopping...
        let next = stream
            .chunk()
            .await
            .unwrap()
            .expect("the stream is still open");
        seen.push_str(&String::from_utf8_lossy(&next));
        assert!(
            !seen.contains("finish_reason\":\"length"),
            "it ended too soon to tell"
        );
        // ...no new request is taken...
        let refused = http
            .post(format!("{url}/chat/completions"))
            .json(&chat("drone", "too late"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        assert!(refused.is_err(), "a request after SIGTERM was answered");
        // ...the one in flight plays to its end...
        let finished = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(chunk) = stream.chunk().await.unwrap() {
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
        assert!(finished.is_ok(), "the stream ended");
        assert!(seen.contains("\"finish_reason\":\"length\""), "{seen}");
        assert!(seen.trim_end().ends_with("data: [DONE]"));
        // ...and the server exits cleanly.
        let status = tokio::time::timeout(Duration::from_secs(60), server.wait())
            .await
            .expect("the server exits after its last stream")
            .unwrap();
        while let Ok(Some(line)) = stderr.next_line().await {
            said.push(line);
        }
        assert!(status.success(), "{status}: {said:?}");
        assert!(!said.iter().any(|l| l.contains("panicked")), "{said:?}");
    });
}
