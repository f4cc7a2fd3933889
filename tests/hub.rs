//! Hugging Face models against a mock Hub on 127.0.0.1 — the routes `hf-hub` and
//! `huggingface_hub` use (repo info, resolve with a CDN redirect, ranged downloads,
//! search), written by hand over a TcpListener: pulls with progress, resume after a
//! dropped connection, refusals, quantisation picks, integrity checks, offline mode, the
//! cache listing and removal, and a pulled model played through the engine. Nothing here
//! touches the internet.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use orchestra::cli::hub::{
    MissingModels, ModelsArgs, ensure_models_with, expand_args, models_report,
};
use orchestra::hub::{
    HubConfig, HubError, ModelRef, Progress, ProgressEvent, cached_path, list_cached, pull_all,
    remove, resolve, search,
};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------
// The mock Hub
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
struct MockFile {
    path: String,
    bytes: Arc<Vec<u8>>,
    sha256: String,
}

struct MockRepo {
    id: String,
    commit: String,
    files: Vec<MockFile>,
    /// Gated: resolve needs `Authorization: Bearer <token>`.
    token: Option<String>,
    downloads: u64,
}

/// One request the mock answered.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    range: Option<String>,
    auth: Option<String>,
}

#[derive(Default)]
struct State {
    repos: Vec<MockRepo>,
    /// Old repo id → new id: answered with a relative 307, as the Hub does after a rename.
    renamed: HashMap<String, String>,
    seen: Vec<Seen>,
    /// Blobs (sha256) whose next GET is cut off halfway through the body.
    cut_once: HashSet<String>,
    /// Blobs served with one byte flipped.
    tamper: HashSet<String>,
}

struct MockHub {
    url: String,
    state: Arc<Mutex<State>>,
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Close the connection after this many body bytes.
    cut_after: Option<usize>,
}

impl Reply {
    fn json(status: u16, value: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: value.to_string().into_bytes(),
            cut_after: None,
        }
    }

    fn error(status: u16, code: &str, message: &str) -> Reply {
        let mut r = Reply::json(status, serde_json::json!({ "error": message }));
        r.headers.push(("X-Error-Code".into(), code.into()));
        r.headers.push(("X-Error-Message".into(), message.into()));
        r
    }

    fn redirect(status: u16, location: String) -> Reply {
        Reply {
            status,
            headers: vec![("Location".into(), location)],
            body: Vec::new(),
            cut_after: None,
        }
    }
}

impl MockHub {
    async fn start() -> MockHub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let (shared, base) = (state.clone(), url.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (shared, base) = (shared.clone(), base.clone());
                tokio::spawn(async move {
                    let _ = serve(socket, &shared, &base).await;
                });
            }
        });
        MockHub { url, state }
    }

    /// Adds a repo; returns its commit.
    fn add_repo(&self, id: &str, files: &[(&str, Vec<u8>)]) -> String {
        let commit = sha256(id.as_bytes())[..40].to_string();
        let files = files
            .iter()
            .map(|(path, bytes)| MockFile {
                path: path.to_string(),
                sha256: sha256(bytes),
                bytes: Arc::new(bytes.clone()),
            })
            .collect();
        self.state.lock().unwrap().repos.push(MockRepo {
            id: id.into(),
            commit: commit.clone(),
            files,
            token: None,
            downloads: 1000 + id.len() as u64,
        });
        commit
    }

    fn gate(&self, id: &str, token: &str) {
        let mut state = self.state.lock().unwrap();
        let repo = state.repos.iter_mut().find(|r| r.id == id).unwrap();
        repo.token = Some(token.into());
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// GET requests for the bytes of a blob.
    fn downloads_of(&self, bytes: &[u8]) -> Vec<Seen> {
        let path = format!("/cdn/{}", sha256(bytes));
        self.seen()
            .into_iter()
            .filter(|s| s.method == "GET" && s.path == path)
            .collect()
    }
}

async fn serve(mut socket: TcpStream, state: &Mutex<State>, base: &str) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut chunk).await?;
        if n == 0 || buf.len() > 1 << 16 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let target = request_line.next().unwrap_or_default().to_string();
    let headers: HashMap<String, String> = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();

    let reply = {
        let mut state = state.lock().unwrap();
        state.seen.push(Seen {
            method: method.clone(),
            path: target.clone(),
            range: headers.get("range").cloned(),
            auth: headers.get("authorization").cloned(),
        });
        route(&mut state, base, &method, &target, &headers)
    };

    let reason = match reply.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    };
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !reply
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        out.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    socket.write_all(out.as_bytes()).await?;
    if method != "HEAD" {
        let end = reply.cut_after.unwrap_or(reply.body.len());
        for piece in reply.body[..end].chunks(16 * 1024) {
            socket.write_all(piece).await?;
            socket.flush().await?;
        }
    }
    socket.shutdown().await
}

fn route(
    state: &mut State,
    base: &str,
    method: &str,
    target: &str,
    headers: &HashMap<String, String>,
) -> Reply {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = percent_decode(path);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "models"] => search_route(state, query),
        ["api", "models", owner, name] => info_route(state, &format!("{owner}/{name}"), "main"),
        ["api", "models", owner, name, "revision", rev] => {
            info_route(state, &format!("{owner}/{name}"), rev)
        }
        ["cdn", sha] => cdn_route(state, sha, method, headers),
        [owner, name, "resolve", rev, file @ ..] => {
            let auth = headers.get("authorization").map(String::as_str);
            resolve_route(
                state,
                base,
                &format!("{owner}/{name}"),
                rev,
                &file.join("/"),
                auth,
            )
        }
        _ => Reply::json(404, serde_json::json!({ "error": "no such route" })),
    }
}

fn find_repo<'a>(state: &'a State, id: &str) -> Option<&'a MockRepo> {
    state.repos.iter().find(|r| r.id == id)
}

fn info_route(state: &State, id: &str, rev: &str) -> Reply {
    if let Some(new) = state.renamed.get(id) {
        return Reply::redirect(307, format!("/api/models/{new}/revision/{rev}"));
    }
    let Some(repo) = find_repo(state, id) else {
        return Reply::error(404, "RepoNotFound", "Repository not found");
    };
    if rev != "main" && rev != repo.commit {
        return Reply::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    }
    Reply::json(
        200,
        serde_json::json!({
            "_id": format!("id-{}", repo.id),
            "id": repo.id,
            "sha": repo.commit,
            "private": false,
            "gated": if repo.token.is_some() { serde_json::json!("manual") } else { serde_json::json!(false) },
            "downloads": repo.downloads,
            "likes": 7,
            "tags": ["gguf"],
            "siblings": repo.files.iter().map(|f| serde_json::json!({ "rfilename": f.path })).collect::<Vec<_>>(),
        }),
    )
}

fn resolve_route(
    state: &State,
    base: &str,
    id: &str,
    rev: &str,
    file: &str,
    auth: Option<&str>,
) -> Reply {
    if let Some(new) = state.renamed.get(id) {
        return Reply::redirect(307, format!("/{new}/resolve/{rev}/{file}"));
    }
    let Some(repo) = find_repo(state, id) else {
        return Reply::error(404, "RepoNotFound", "Repository not found");
    };
    if let Some(token) = &repo.token
        && auth != Some(&format!("Bearer {token}"))
    {
        let status = if auth.is_none() { 401 } else { 403 };
        return Reply::error(
            status,
            "GatedRepo",
            &format!(
                "Access to model {id} is restricted. You must have access to it and be authenticated."
            ),
        );
    }
    if rev != "main" && rev != repo.commit {
        return Reply::error(404, "RevisionNotFound", "Invalid rev id");
    }
    let Some(f) = repo.files.iter().find(|f| f.path == file) else {
        let mut r = Reply::error(404, "EntryNotFound", "Entry not found");
        r.headers
            .push(("X-Repo-Commit".into(), repo.commit.clone()));
        return r;
    };
    // Like the Hub for an LFS file: a redirect to the CDN carrying the metadata, with the
    // pointer's git id as ETag and the content's sha256 as X-Linked-Etag.
    let mut r = Reply::redirect(302, format!("{base}/cdn/{}", f.sha256));
    r.headers.extend([
        ("X-Repo-Commit".to_string(), repo.commit.clone()),
        ("ETag".to_string(), format!("\"{}\"", &f.sha256[..40])),
        ("X-Linked-Etag".to_string(), format!("\"{}\"", f.sha256)),
        ("X-Linked-Size".to_string(), f.bytes.len().to_string()),
    ]);
    r
}

fn cdn_route(
    state: &mut State,
    sha: &str,
    method: &str,
    headers: &HashMap<String, String>,
) -> Reply {
    let Some(file) = state
        .repos
        .iter()
        .flat_map(|r| &r.files)
        .find(|f| f.sha256 == sha)
        .cloned()
    else {
        return Reply::json(404, serde_json::json!({ "error": "no such blob" }));
    };
    let mut bytes = file.bytes.as_ref().clone();
    if state.tamper.contains(sha) {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
    }
    let total = bytes.len();
    let (status, start, end) = match headers.get("range").and_then(|r| r.strip_prefix("bytes=")) {
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
            let start: usize = a.parse().unwrap_or(0);
            let end: usize = if b.is_empty() {
                total - 1
            } else {
                b.parse().unwrap_or(total - 1)
            };
            if start >= total || end < start {
                return Reply {
                    status: 416,
                    headers: vec![("Content-Range".into(), format!("bytes */{total}"))],
                    body: Vec::new(),
                    cut_after: None,
                };
            }
            (206, start, end.min(total - 1))
        }
        None => (200, 0, total - 1),
    };
    let body = bytes[start..=end].to_vec();
    let cut_after = (method == "GET" && state.cut_once.remove(sha)).then_some(body.len() / 2);
    let mut headers = vec![
        ("Accept-Ranges".to_string(), "bytes".to_string()),
        ("ETag".to_string(), format!("\"{sha}\"")),
        (
            "Content-Type".to_string(),
            "application/octet-stream".to_string(),
        ),
    ];
    if status == 206 {
        headers.push((
            "Content-Range".into(),
            format!("bytes {start}-{end}/{total}"),
        ));
    }
    Reply {
        status,
        headers,
        body,
        cut_after,
    }
}

fn search_route(state: &State, query: &str) -> Reply {
    let params: HashMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(&v.replace('+', " "))))
        .collect();
    let words = params
        .get("search")
        .cloned()
        .unwrap_or_default()
        .to_lowercase();
    let full = params.get("full").is_some_and(|v| v == "true");
    let gguf_only = params.get("filter").is_some_and(|v| v == "gguf");
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(1000);
    let mut repos: Vec<&MockRepo> = state
        .repos
        .iter()
        .filter(|r| r.id.to_lowercase().contains(&words))
        .filter(|r| !gguf_only || r.files.iter().any(|f| f.path.ends_with(".gguf")))
        .collect();
    if params.get("sort").is_some_and(|s| s == "downloads") {
        repos.sort_by_key(|r| std::cmp::Reverse(r.downloads));
    }
    let items: Vec<serde_json::Value> = repos
        .into_iter()
        .take(limit)
        .map(|r| {
            let mut v = serde_json::json!({
                "_id": format!("id-{}", r.id),
                "id": r.id,
                "downloads": r.downloads,
                "likes": 7,
                "gated": if r.token.is_some() { serde_json::json!("manual") } else { serde_json::json!(false) },
            });
            if full {
                v["siblings"] = r.files.iter().map(|f| serde_json::json!({ "rfilename": f.path })).collect();
            }
            v
        })
        .collect();
    Reply::json(200, serde_json::Value::Array(items))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fake GGUF: the magic, then deterministic noise.
fn gguf_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = b"GGUF".to_vec();
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn config(hub: &MockHub, dir: &TempDir) -> HubConfig {
    let mut cfg = HubConfig::new(&hub.url, dir.path().join("hub"));
    cfg.retries = 2;
    cfg
}

fn hf(text: &str) -> ModelRef {
    ModelRef::parse(text).unwrap()
}

/// A progress sink that records events.
fn recorder() -> (Progress, Arc<Mutex<Vec<ProgressEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (
        Progress::from_fn(move |e| sink.lock().unwrap().push(e.clone())),
        events,
    )
}

fn blob_path(cfg: &HubConfig, repo: &str, bytes: &[u8]) -> PathBuf {
    cfg.cache_dir
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("blobs")
        .join(sha256(bytes))
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_reports_progress_and_fills_the_cache_in_the_huggingface_layout() {
    let hub = MockHub::start().await;
    let bytes = gguf_bytes(1, 300_000);
    let commit = hub.add_repo(
        "org/tiny-GGUF",
        &[
            ("tiny-Q8_0.gguf", bytes.clone()),
            ("README.md", b"# tiny".to_vec()),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);
    let (progress, events) = recorder();

    let path = resolve(&hf("hf:org/tiny-GGUF/tiny-Q8_0.gguf"), &cfg, progress)
        .await
        .unwrap();

    let repo_dir = cfg.cache_dir.join("models--org--tiny-GGUF");
    assert_eq!(
        path,
        repo_dir
            .join("snapshots")
            .join(&commit)
            .join("tiny-Q8_0.gguf")
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    // A relative link into blobs/, named by the sha256 (X-Linked-Etag), as Python makes it.
    let target = std::fs::read_link(&path).unwrap();
    assert_eq!(target, Path::new("../../blobs").join(sha256(&bytes)));
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        commit
    );
    assert!(
        !repo_dir
            .join("blobs")
            .join(format!("{}.incomplete", sha256(&bytes)))
            .exists()
    );

    let events = events.lock().unwrap().clone();
    let label = "org/tiny-GGUF/tiny-Q8_0.gguf".to_string();
    assert_eq!(
        events[0],
        ProgressEvent::Planned {
            files: 1,
            bytes: 300_000
        }
    );
    assert_eq!(
        events[1],
        ProgressEvent::Started {
            file: label.clone(),
            size: 300_000,
            from: 0
        }
    );
    let advanced: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            ProgressEvent::Advanced { done, .. } => Some(*done),
            _ => None,
        })
        .collect();
    assert!(advanced.len() > 1, "{advanced:?}");
    assert!(advanced.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(advanced.last(), Some(&300_000));
    assert_eq!(
        events.last(),
        Some(&ProgressEvent::Finished {
            file: label.clone(),
            size: 300_000
        })
    );
    assert_eq!(hub.downloads_of(&bytes).len(), 1);

    // Again, with terminal bars (hidden here): the cached copy is used, nothing downloaded.
    let bars = orchestra::cli::progress::bars_to(indicatif::ProgressDrawTarget::hidden());
    let again = resolve(&hf("hf:org/tiny-GGUF/tiny-Q8_0.gguf"), &cfg, bars)
        .await
        .unwrap();
    assert_eq!(again, path);
    assert_eq!(hub.downloads_of(&bytes).len(), 1);
    assert_eq!(
        cached_path(&hf("hf:org/tiny-GGUF/tiny-Q8_0.gguf"), &cfg),
        Some(path)
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_python_already_downloaded_is_not_downloaded_again() {
    let hub = MockHub::start().await;
    let bytes = gguf_bytes(2, 50_000);
    let commit = hub.add_repo("org/shared", &[("m-Q4_K_M.gguf", bytes.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);
    // What huggingface_hub leaves behind: blob, relative snapshot link, ref.
    let repo_dir = cfg.cache_dir.join("models--org--shared");
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("snapshots").join(&commit)).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("blobs").join(sha256(&bytes)), &bytes).unwrap();
    std::os::unix::fs::symlink(
        Path::new("../../blobs").join(sha256(&bytes)),
        repo_dir
            .join("snapshots")
            .join(&commit)
            .join("m-Q4_K_M.gguf"),
    )
    .unwrap();
    std::fs::write(repo_dir.join("refs/main"), &commit).unwrap();

    let (progress, events) = recorder();
    let path = resolve(&hf("hf:org/shared"), &cfg, progress).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    assert!(hub.downloads_of(&bytes).is_empty());
    let events = events.lock().unwrap().clone();
    assert_eq!(events[0], ProgressEvent::Planned { files: 0, bytes: 0 });
    assert!(events.contains(&ProgressEvent::Cached {
        file: "org/shared/m-Q4_K_M.gguf".into(),
        size: 50_000
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_resumed_with_a_range_request() {
    let hub = MockHub::start().await;
    let bytes = gguf_bytes(3, 400_000);
    hub.add_repo("org/flaky", &[("flaky-Q8_0.gguf", bytes.clone())]);
    hub.state.lock().unwrap().cut_once.insert(sha256(&bytes));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);
    let (progress, events) = recorder();

    let path = resolve(&hf("hf:org/flaky:Q8_0"), &cfg, progress)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);

    let gets = hub.downloads_of(&bytes);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    let range = gets[1]
        .range
        .clone()
        .expect("the second request asks for the rest");
    let from: u64 = range
        .strip_prefix("bytes=")
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(from > 0 && from < 400_000, "{range}");
    assert_eq!(range, format!("bytes={from}-399999"));
    let events = events.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ProgressEvent::Retrying { at, .. } if *at == from)),
        "{events:?}"
    );
    // The resumed bar continues where the first one stopped.
    let after_retry: Vec<u64> = events
        .iter()
        .skip_while(|e| !matches!(e, ProgressEvent::Retrying { .. }))
        .filter_map(|e| match e {
            ProgressEvent::Advanced { done, .. } => Some(*done),
            _ => None,
        })
        .collect();
    assert!(after_retry.first().is_some_and(|d| *d > from));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_file_left_by_an_earlier_run_is_resumed() {
    let hub = MockHub::start().await;
    let bytes = gguf_bytes(4, 200_000);
    hub.add_repo("org/partial", &[("p.gguf", bytes.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);
    let blob = blob_path(&cfg, "org/partial", &bytes);
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    std::fs::write(
        blob.with_file_name(format!("{}.incomplete", sha256(&bytes))),
        &bytes[..1000],
    )
    .unwrap();
    let (progress, events) = recorder();

    let path = resolve(&hf("hf:org/partial/p.gguf"), &cfg, progress)
        .await
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    let gets = hub.downloads_of(&bytes);
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].range.as_deref(), Some("bytes=1000-199999"));
    assert!(events.lock().unwrap().contains(&ProgressEvent::Started {
        file: "org/partial/p.gguf".into(),
        size: 200_000,
        from: 1000
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_repo_names_the_repo_and_the_endpoint() {
    let hub = MockHub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);
    let err = resolve(&hf("hf:org/nope-GGUF:Q4_K_M"), &cfg, Progress::hidden())
        .await
        .unwrap_err();
    assert!(matches!(err, HubError::RepoNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("`org/nope-GGUF` was not found on {}", hub.url)),
        "{msg}"
    );
    assert!(msg.contains("check the spelling"), "{msg}");

    hub.add_repo("org/real", &[("a-Q8_0.gguf", gguf_bytes(5, 100))]);
    let err = resolve(&hf("hf:org/real/b.gguf"), &cfg, Progress::hidden())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`b.gguf` is not in `org/real`"), "{msg}");
    assert!(msg.contains("Q8_0"), "{msg}");
    let err = resolve(&hf("hf:org/real/a-Q8_0.gguf@v9"), &cfg, Progress::hidden())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("revision `v9` of `org/real` was not found"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_repo_is_refused_without_a_token_and_pulled_with_one() {
    let hub = MockHub::start().await;
    let bytes = gguf_bytes(6, 80_000);
    hub.add_repo("org/gated-GGUF", &[("g-Q4_K_M.gguf", bytes.clone())]);
    hub.gate("org/gated-GGUF", "hf_good");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&hub, &dir);
    let reference = hf("hf:org/gated-GGUF:Q4_K_M");

    let err = resolve(&reference, &cfg, Progress::hidden())
        .await
        .unwrap_err();
    assert!(
        matches!(err, HubError::AccessRefused { status: 401, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("access to `org/gated-GGUF` was refused (401)"),
        "{msg}"
    );
    assert!(
        msg.contains("gated or private") && msg.contains("set HF_TOKEN"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("{}/org/gated-GGUF", hub.url)),
        "{msg}"
    );

    cfg.token = Some("hf_wrong".into());
    let err = resolve(&reference, &cfg, Progress::hidden())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("was refused (403)") && msg.contains("accept its terms"),
        "{msg}"
    );

    cfg.token = Some("hf_good".into());
    let path = resolve(&reference, &cfg, Progress::hidden()).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    let heads: Vec<Seen> = hub
        .seen()
        .into_iter()
        .filter(|s| s.method == "HEAD" && s.path.contains("/resolve/"))
        .collect();
    assert_eq!(
        heads.last().unwrap().auth.as_deref(),
        Some("Bearer hf_good")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quantisation_picks_its_file_and_every_part_of_a_split_model() {
    let hub = MockHub::start().await;
    let q8 = gguf_bytes(7, 60_000);
    let part1 = gguf_bytes(8, 70_000);
    let part2 = gguf_bytes(9, 30_000);
    let commit = hub.add_repo(
        "org/multi-GGUF",
        &[
            ("README.md", b"readme".to_vec()),
            ("multi-Q8_0.gguf", q8.clone()),
            ("Q4_K_M/multi-Q4_K_M-00001-of-00002.gguf", part1.clone()),
            ("Q4_K_M/multi-Q4_K_M-00002-of-00002.gguf", part2.clone()),
            ("mmproj-multi-F16.gguf", gguf_bytes(10, 100)),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);

    let path = resolve(&hf("hf:org/multi-GGUF:q8_0"), &cfg, Progress::hidden())
        .await
        .unwrap();
    assert!(
        path.ends_with(format!("{commit}/multi-Q8_0.gguf")),
        "{path:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), q8);

    // No quantisation given: Q4_K_M, as llama.cpp picks; both parts land side by side.
    let (progress, events) = recorder();
    let path = resolve(&hf("hf:org/multi-GGUF"), &cfg, progress)
        .await
        .unwrap();
    assert!(
        path.ends_with("Q4_K_M/multi-Q4_K_M-00001-of-00002.gguf"),
        "{path:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), part1);
    assert_eq!(
        std::fs::read(path.with_file_name("multi-Q4_K_M-00002-of-00002.gguf")).unwrap(),
        part2
    );
    assert_eq!(
        events.lock().unwrap()[0],
        ProgressEvent::Planned {
            files: 2,
            bytes: 100_000
        }
    );

    // Naming part 2 also fetches the model from part 1.
    let path = resolve(
        &hf("hf:org/multi-GGUF/Q4_K_M/multi-Q4_K_M-00002-of-00002.gguf"),
        &cfg,
        Progress::hidden(),
    )
    .await
    .unwrap();
    assert!(path.ends_with("multi-Q4_K_M-00001-of-00002.gguf"));

    let err = resolve(&hf("hf:org/multi-GGUF:Q2_K"), &cfg, Progress::hidden())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("has no GGUF model of quantisation `Q2_K`"),
        "{msg}"
    );
    assert!(msg.contains("Q4_K_M, Q8_0"), "{msg}");
    assert!(
        !msg.contains("F16"),
        "a vision projector is no model: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_model_with_a_missing_part_is_refused() {
    let hub = MockHub::start().await;
    hub.add_repo(
        "org/broken",
        &[
            ("b-00001-of-00003.gguf", gguf_bytes(11, 100)),
            ("b-00003-of-00003.gguf", gguf_bytes(12, 100)),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);
    let err = resolve(
        &hf("hf:org/broken/b-00001-of-00003.gguf"),
        &cfg,
        Progress::hidden(),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("lacks b-00002-of-00003.gguf"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_cached_file_is_detected_and_fetched_again() {
    let hub = MockHub::start().await;
    let bytes = gguf_bytes(13, 120_000);
    hub.add_repo("org/fragile", &[("f-Q8_0.gguf", bytes.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);
    let reference = hf("hf:org/fragile:Q8_0");
    resolve(&reference, &cfg, Progress::hidden()).await.unwrap();
    let blob = blob_path(&cfg, "org/fragile", &bytes);

    // Same length, different bytes (a later write: a new modification time).
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut damaged = bytes.clone();
    damaged[60_000] ^= 0x55;
    std::fs::write(&blob, &damaged).unwrap();
    assert_eq!(
        cached_path(&reference, &cfg),
        None,
        "the damage is seen without network"
    );
    let mut offline = cfg.clone();
    offline.offline = true;
    let err = resolve(&reference, &offline, Progress::hidden())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is corrupt (sha256"), "{err}");

    let (progress, events) = recorder();
    let path = resolve(&reference, &cfg, progress).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(hub.downloads_of(&bytes).len(), 2);
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, ProgressEvent::Refetching { .. }))
    );

    // A truncated blob (an interrupted copy) is caught by its size.
    std::fs::write(&blob, &bytes[..5000]).unwrap();
    assert_eq!(cached_path(&reference, &cfg), None);
    resolve(&reference, &cfg, Progress::hidden()).await.unwrap();
    assert_eq!(std::fs::read(&blob).unwrap(), bytes);
    assert_eq!(hub.downloads_of(&bytes).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_do_not_match_the_announced_hash_are_never_used() {
    let hub = MockHub::start().await;
    let bytes = gguf_bytes(14, 90_000);
    hub.add_repo("org/liar", &[("l.gguf", bytes.clone())]);
    hub.state.lock().unwrap().tamper.insert(sha256(&bytes));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);
    let reference = hf("hf:org/liar/l.gguf");
    let err = resolve(&reference, &cfg, Progress::hidden())
        .await
        .unwrap_err();
    assert!(matches!(err, HubError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("`org/liar/l.gguf` failed verification after download"),
        "{err}"
    );
    assert_eq!(
        hub.downloads_of(&bytes).len(),
        2,
        "fetched once more before giving up"
    );
    let blob = blob_path(&cfg, "org/liar", &bytes);
    assert!(!blob.exists());
    assert!(
        !blob
            .with_file_name(format!("{}.incomplete", sha256(&bytes)))
            .exists()
    );
    assert_eq!(cached_path(&reference, &cfg), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_mode_uses_the_cache_and_names_what_is_missing() {
    let hub = MockHub::start().await;
    let bytes = gguf_bytes(15, 40_000);
    hub.add_repo(
        "org/kept",
        &[
            ("k-Q4_K_M.gguf", bytes.clone()),
            ("k-Q8_0.gguf", gguf_bytes(16, 100)),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);
    let pulled = resolve(&hf("hf:org/kept/k-Q4_K_M.gguf"), &cfg, Progress::hidden())
        .await
        .unwrap();

    let mut offline = cfg.clone();
    offline.offline = true;
    let before = hub.seen().len();
    for text in [
        "hf:org/kept/k-Q4_K_M.gguf",
        "hf:org/kept:Q4_K_M",
        "hf:org/kept",
        "hf:org/kept@main",
    ] {
        let path = resolve(&hf(text), &offline, Progress::hidden())
            .await
            .unwrap();
        assert_eq!(path, pulled, "{text}");
    }
    assert_eq!(hub.seen().len(), before, "offline means no requests");

    let err = resolve(&hf("hf:org/kept:Q8_0"), &offline, Progress::hidden())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::OfflineMissing { .. }), "{err:?}");
    assert!(
        msg.starts_with("HF_HUB_OFFLINE is set and `hf:org/kept:Q8_0` is not in the cache at"),
        "{msg}"
    );
    assert!(msg.contains("a Q8_0 GGUF of `org/kept`"), "{msg}");
    assert!(
        msg.contains("run `orchestra pull hf:org/kept:Q8_0` while online"),
        "{msg}"
    );
    let err = resolve(&hf("hf:org/other/x.gguf"), &offline, Progress::hidden())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("missing the repo `org/other`"),
        "{err}"
    );
    assert_eq!(hub.seen().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_network_the_cached_copy_is_used_and_a_miss_says_so() {
    let hub = MockHub::start().await;
    let bytes = gguf_bytes(17, 30_000);
    hub.add_repo("org/away", &[("a-Q4_K_M.gguf", bytes.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);
    let pulled = resolve(&hf("hf:org/away"), &cfg, Progress::hidden())
        .await
        .unwrap();

    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut down = cfg.clone();
    down.endpoint = format!("http://{closed}");
    down.retries = 0;
    let (progress, events) = recorder();
    let path = resolve(&hf("hf:org/away"), &down, progress).await.unwrap();
    assert_eq!(path, pulled);
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, ProgressEvent::Note(t) if t.contains("using the cached copy"))),
        "the user is told"
    );
    let err = resolve(&hf("hf:org/elsewhere:Q4_K_M"), &down, Progress::hidden())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::Unreachable { .. }), "{err:?}");
    assert!(
        msg.contains(&format!("could not reach http://{closed}")),
        "{msg}"
    );
    assert!(
        msg.contains("`hf:org/elsewhere:Q4_K_M` is not in the cache"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_repo_is_followed_through_its_redirect() {
    let hub = MockHub::start().await;
    let bytes = gguf_bytes(18, 20_000);
    hub.add_repo("org/new-name", &[("n.gguf", bytes.clone())]);
    hub.state
        .lock()
        .unwrap()
        .renamed
        .insert("org/old-name".into(), "org/new-name".into());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);
    let path = resolve(&hf("hf:org/old-name/n.gguf"), &cfg, Progress::hidden())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(path.starts_with(cfg.cache_dir.join("models--org--old-name")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_all_fetches_what_it_can_and_lists_every_failure() {
    let hub = MockHub::start().await;
    let a = gguf_bytes(19, 25_000);
    let b = gguf_bytes(20, 35_000);
    hub.add_repo("org/a", &[("a-Q4_K_M.gguf", a.clone())]);
    hub.add_repo("org/b", &[("b-Q4_K_M.gguf", b.clone())]);
    hub.add_repo("org/locked", &[("l-Q4_K_M.gguf", gguf_bytes(21, 10))]);
    hub.gate("org/locked", "secret");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);
    let local = dir.path().join("local.gguf");
    std::fs::write(&local, gguf_bytes(22, 10)).unwrap();

    let refs = [
        hf("hf:org/a"),
        hf("hf:org/b:Q4_K_M"),
        ModelRef::Local(local.clone()),
        hf("hf:org/a/a-Q4_K_M.gguf"),
    ];
    let (progress, events) = recorder();
    let paths = pull_all(&refs, &cfg, progress).await.unwrap();
    assert_eq!(paths.len(), 4);
    assert_eq!(paths[2], local);
    assert_eq!(paths[0], paths[3], "one file, two references");
    assert_eq!(hub.downloads_of(&a).len(), 1);
    assert_eq!(
        events.lock().unwrap()[0],
        ProgressEvent::Planned {
            files: 2,
            bytes: 60_000
        }
    );

    let refs = [
        hf("hf:org/a"),
        hf("hf:org/missing"),
        hf("hf:org/locked"),
        ModelRef::Local(dir.path().join("no.gguf")),
    ];
    let err = pull_all(&refs, &cfg, Progress::hidden()).await.unwrap_err();
    let HubError::Several { total, errors } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((*total, errors.len()), (4, 3));
    let msg = err.to_string();
    assert!(
        msg.starts_with("3 of 4 models could not be fetched"),
        "{msg}"
    );
    assert!(msg.contains("`org/missing` was not found"), "{msg}");
    assert!(
        msg.contains("access to `org/locked` was refused (401)"),
        "{msg}"
    );
    assert!(msg.contains("local model"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_lists_gguf_repositories_with_their_quantisations() {
    let hub = MockHub::start().await;
    hub.add_repo(
        "org/Coder-7B-GGUF",
        &[
            ("coder-Q8_0.gguf", vec![1]),
            ("coder-Q4_K_M.gguf", vec![2]),
            ("x.txt", vec![3]),
        ],
    );
    hub.add_repo(
        "org/coder-1b-GGUF-but-longer-name",
        &[("c-IQ4_XS.gguf", vec![1])],
    );
    hub.add_repo("org/coder-safetensors", &[("model.safetensors", vec![1])]);
    hub.add_repo("org/poet-GGUF", &[("p-F16.gguf", vec![1])]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);

    let hits = search("coder", &cfg, 10).await.unwrap();
    let repos: Vec<&str> = hits.iter().map(|h| h.repo.as_str()).collect();
    assert_eq!(
        repos,
        ["org/coder-1b-GGUF-but-longer-name", "org/Coder-7B-GGUF"],
        "most downloaded first, GGUF only"
    );
    assert_eq!(hits[1].quants, ["Q4_K_M", "Q8_0"]);
    assert_eq!(hits[0].quants, ["IQ4_XS"]);
    assert!(hits[0].downloads > hits[1].downloads);
    assert_eq!(search("coder", &cfg, 1).await.unwrap().len(), 1);
    let query = hub
        .seen()
        .into_iter()
        .find(|s| s.path.starts_with("/api/models?"))
        .unwrap()
        .path;
    assert!(
        query.contains("filter=gguf") && query.contains("sort=downloads"),
        "{query}"
    );

    let mut offline = cfg.clone();
    offline.offline = true;
    let err = search("coder", &offline, 10).await.unwrap_err();
    assert!(err.to_string().contains("HF_HUB_OFFLINE is set"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_models_are_listed_and_removed_without_touching_shared_blobs() {
    let hub = MockHub::start().await;
    let q8 = gguf_bytes(23, 45_000);
    let p1 = gguf_bytes(24, 20_000);
    let p2 = gguf_bytes(25, 10_000);
    hub.add_repo(
        "org/lib",
        &[
            ("lib-Q8_0.gguf", q8.clone()),
            ("lib-Q4_K_M-00001-of-00002.gguf", p1),
            ("lib-Q4_K_M-00002-of-00002.gguf", p2),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);
    pull_all(
        &[hf("hf:org/lib:Q8_0"), hf("hf:org/lib:Q4_K_M")],
        &cfg,
        Progress::hidden(),
    )
    .await
    .unwrap();

    let listed = list_cached(&cfg);
    let names: Vec<String> = listed.iter().map(|m| m.reference.to_string()).collect();
    assert_eq!(
        names,
        [
            "hf:org/lib/lib-Q4_K_M-00001-of-00002.gguf",
            "hf:org/lib/lib-Q8_0.gguf"
        ]
    );
    assert_eq!(
        (listed[0].parts, listed[0].size, listed[0].missing_parts),
        (2, 30_000, 0)
    );
    assert_eq!(listed[1].size, 45_000);
    assert_eq!(listed[1].refs, ["main"]);

    let removed = remove(&hf("hf:org/lib:Q8_0"), &cfg).unwrap();
    assert_eq!(removed.files, ["org/lib/lib-Q8_0.gguf"]);
    assert_eq!(removed.bytes_freed, 45_000);
    assert!(!blob_path(&cfg, "org/lib", &q8).exists());
    assert_eq!(list_cached(&cfg).len(), 1);
    let err = remove(&hf("hf:org/lib:Q8_0"), &cfg).unwrap_err();
    assert!(err.to_string().contains("is not in the cache"), "{err}");

    let removed = remove(&hf("hf:org/lib"), &cfg).unwrap();
    assert_eq!(removed.bytes_freed, 30_000);
    assert!(!cfg.cache_dir.join("models--org--lib").exists());
    assert!(list_cached(&cfg).is_empty());

    let local = dir.path().join("mine.gguf");
    std::fs::write(&local, b"GGUF").unwrap();
    let err = remove(&ModelRef::Local(local.clone()), &cfg).unwrap_err();
    assert!(err.to_string().contains("is a local file"), "{err}");
    assert!(local.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_synthetic_model_loads_and_plays_through_the_engine() {
    use orchestra::engine::{GenerateRequest, LoadOptions, Model, SamplingParams};
    use orchestra::synth::TensorType;

    const SCRIPT: &str = "Downloaded from the mock hub, played by llama.cpp.";
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.gguf");
    orchestra::synth::write_rehearsal_model("hubbed", SCRIPT, &source, TensorType::Q8_0).unwrap();
    let bytes = std::fs::read(&source).unwrap();
    let hub = MockHub::start().await;
    hub.add_repo(
        "org/rehearsal-GGUF",
        &[("rehearsal-Q8_0.gguf", bytes.clone())],
    );
    let cfg = config(&hub, &dir);

    let path = resolve(&hf("hf:org/rehearsal-GGUF:Q8_0"), &cfg, Progress::hidden())
        .await
        .unwrap();
    assert_eq!(hub.downloads_of(&bytes).len(), 1);
    let options = LoadOptions {
        context: 256,
        slots: 1,
        ..LoadOptions::default()
    };
    let model = Model::load_async(path, options).await.unwrap();
    let request = GenerateRequest::user("play it")
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(64);
    let completion = model.generate(request).unwrap().finish().await.unwrap();
    assert_eq!(completion.text, SCRIPT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_report_shows_header_facts_sizes_and_the_scores_that_use_them() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.gguf");
    orchestra::synth::write_model(&orchestra::synth::tiny_spec(), &real).unwrap();
    let bytes = std::fs::read(&real).unwrap();
    let hub = MockHub::start().await;
    hub.add_repo("org/tiny-GGUF", &[("tiny-Q8_0.gguf", bytes.clone())]);
    hub.add_repo(
        "org/other-GGUF",
        &[("other-Q4_K_M.gguf", gguf_bytes(26, 1000))],
    );
    let cfg = config(&hub, &dir);
    let score = dir.path().join("band.lua");
    std::fs::write(
        &score,
        "-- model = 'hf:org/other-GGUF'\nband:add('a', { model = \"hf:org/tiny-GGUF:Q8_0\" })\n",
    )
    .unwrap();

    let refs = expand_args(&[score.display().to_string(), "hf:org/other-GGUF".into()]).unwrap();
    assert_eq!(
        refs,
        [hf("hf:org/tiny-GGUF:Q8_0"), hf("hf:org/other-GGUF")],
        "the commented model is skipped"
    );
    pull_all(&refs, &cfg, Progress::hidden()).await.unwrap();

    let args = ModelsArgs {
        command: None,
        dirs: Vec::new(),
        scores: vec![score],
    };
    let report = models_report(&args, &cfg).unwrap();
    let tiny = report
        .lines()
        .find(|l| l.starts_with("hf:org/tiny-GGUF/tiny-Q8_0.gguf"))
        .unwrap_or_else(|| panic!("{report}"));
    let header = orchestra::gguf::read_header(&real).unwrap();
    assert!(tiny.contains("llama"), "{tiny}");
    assert!(tiny.contains("band.lua"), "{tiny}");
    assert!(
        tiny.contains(&indicatif::BinaryBytes(bytes.len() as u64).to_string()),
        "{tiny}"
    );
    assert!(header.parameter_count() > 0);
    let other = report
        .lines()
        .find(|l| l.starts_with("hf:org/other-GGUF/other-Q4_K_M.gguf"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        other.contains("Q4_K_M") && other.trim_end().ends_with('-'),
        "unused, unreadable header: {other}"
    );
    assert!(report.contains("2 model(s)"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_endpoint_is_named_and_local_models_still_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = HubConfig::new("not a url", dir.path().join("hub"));
    cfg.retries = 0;
    let local = dir.path().join("here.gguf");
    std::fs::write(&local, b"GGUF").unwrap();
    let err = pull_all(
        &[hf("hf:org/x"), ModelRef::Local(local.clone())],
        &cfg,
        Progress::hidden(),
    )
    .await
    .unwrap_err();
    let HubError::Several { errors, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .starts_with("HF_ENDPOINT `not a url` cannot be used"),
        "{err}"
    );
    let path = resolve(&ModelRef::Local(local.clone()), &cfg, Progress::hidden())
        .await
        .unwrap();
    assert_eq!(path, local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_pulls_missing_models_only_when_allowed() {
    let hub = MockHub::start().await;
    let bytes = gguf_bytes(27, 15_000);
    hub.add_repo("org/band", &[("b-Q4_K_M.gguf", bytes.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&hub, &dir);
    let refs = [hf("hf:org/band")];

    // No terminal to ask on: the answer is no, and the message says what to run.
    for policy in [MissingModels::Fail, MissingModels::Ask] {
        let err = ensure_models_with(&refs, &cfg, policy, Progress::hidden())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("run `orchestra pull hf:org/band` first, or pass --pull"),
            "{err}"
        );
    }
    assert!(hub.downloads_of(&bytes).is_empty());

    let (progress, events) = recorder();
    let paths = ensure_models_with(&refs, &cfg, MissingModels::Pull, progress)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&paths[0]).unwrap(), bytes);
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, ProgressEvent::Finished { .. }))
    );

    // Once cached, no request at all.
    let before = hub.seen().len();
    let again = ensure_models_with(&refs, &cfg, MissingModels::Fail, Progress::hidden())
        .await
        .unwrap();
    assert_eq!(again, paths);
    assert_eq!(hub.seen().len(), before);
}
