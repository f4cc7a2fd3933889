//! `orchestra openclaw setup` as a user runs it: the real binary, a temporary HOME, an
//! in-process server on 127.0.0.1 (or a score read without loading it), and the
//! OpenClaw config it edits — comments and other providers kept, idempotent, `--dry-run`.

#[allow(unused_imports)] // not every shared fixture is used here
mod serve_support;

use std::path::{Path, PathBuf};
use std::process::Output;

use orchestra::cli::openclaw::SKILL;
use orchestra::server::ServeConfig;
use serde_json::Value;
use serve_support::*;

/// A fresh HOME for one test.
fn home(test: &str) -> PathBuf {
    let dir = scratch().join("homes").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config_path(home: &Path) -> PathBuf {
    home.join(".openclaw/openclaw.json")
}

fn skill_path(home: &Path) -> PathBuf {
    home.join(".openclaw/skills/orchestra/SKILL.md")
}

/// Runs `orchestra openclaw setup ARGS` with `home` as HOME. The tests' bands have
/// small contexts, so this passes `--allow-small-context` ([`setup_strict`] does not).
async fn setup(home: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--allow-small-context"];
    all.extend_from_slice(args);
    setup_strict(home, &all).await
}

/// Runs `orchestra openclaw setup ARGS` exactly as given.
async fn setup_strict(home: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(["openclaw", "setup"])
        .args(args)
        .env("HOME", home)
        .env_remove("OPENCLAW_CONFIG_PATH")
        .env_remove("OPENCLAW_STATE_DIR")
        .env_remove("ORCHESTRA_API_KEY")
        .output()
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn succeeded(o: &Output) -> String {
    assert!(
        o.status.success(),
        "setup failed\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

fn read_config(home: &Path) -> Value {
    let text = std::fs::read_to_string(config_path(home)).unwrap();
    json5::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn model_ids(config: &Value) -> Vec<String> {
    config["models"]["providers"]["orchestra"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn model<'a>(config: &'a Value, id: &str) -> &'a Value {
    config["models"]["providers"]["orchestra"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no model `{id}` in {config:#}"))
}

const USER_CONFIG: &str = r#"// my OpenClaw settings
{
  agents: {
    defaults: {
      workspace: "~/work", // where the agent works
    },
  },
  /* hosted models stay */
  models: {
    mode: "merge",
    providers: {
      openrouter: {
        baseUrl: "https://openrouter.example/api/v1",
        apiKey: "${OPENROUTER_API_KEY}",
        models: [{ id: "some/model", name: "Some model" }],
      },
    },
  },
}
"#;

#[test]
fn setup_from_a_running_server_adds_the_provider_and_installs_the_skill() {
    runtime().block_on(async {
        let s = serve("openclaw_server", ServeConfig::default()).await;
        let home = home("from_server");
        let out = succeeded(&setup(&home, &["--url", &s.url]).await);
        assert!(
            out.contains("added the model provider `orchestra`"),
            "{out}"
        );
        assert!(out.contains("installed"), "{out}");

        let config = read_config(&home);
        let provider = &config["models"]["providers"]["orchestra"];
        assert_eq!(provider["baseUrl"], s.url.as_str());
        assert_eq!(provider["api"], "openai-completions");
        assert!(
            provider.get("apiKey").is_none(),
            "no key on a keyless server"
        );
        let ids = model_ids(&config);
        for id in [
            "orchestra",
            "orchestra/code",
            "orchestra/analysis",
            "coltrane",
            "drone",
        ] {
            assert!(ids.contains(&id.to_string()), "{id} missing from {ids:?}");
        }
        assert!(
            !ids.contains(&"duke".to_string()),
            "an embedding model is no chat model: {ids:?}"
        );
        assert_eq!(model(&config, "drone")["contextWindow"], 8192);
        // An arrangement can count on its narrowest soloist: any section may play.
        assert_eq!(model(&config, "orchestra")["contextWindow"], 512);
        assert_eq!(model(&config, "orchestra/analysis")["contextWindow"], 512);
        assert_eq!(model(&config, "coltrane")["contextWindow"], 512);
        assert!(model(&config, "coltrane")["maxTokens"].as_u64().unwrap() > 0);
        assert_eq!(std::fs::read_to_string(skill_path(&home)).unwrap(), SKILL);
    });
}

#[test]
fn the_users_comments_and_other_providers_are_kept_and_a_second_run_changes_nothing() {
    runtime().block_on(async {
        let s = serve("openclaw_keep", ServeConfig::default()).await;
        let home = home("keep");
        std::fs::create_dir_all(home.join(".openclaw")).unwrap();
        std::fs::write(config_path(&home), USER_CONFIG).unwrap();

        succeeded(&setup(&home, &["--url", &s.url, "--subagents"]).await);
        let text = std::fs::read_to_string(config_path(&home)).unwrap();
        for kept in [
            "// my OpenClaw settings",
            "// where the agent works",
            "/* hosted models stay */",
            "apiKey: \"${OPENROUTER_API_KEY}\"",
        ] {
            assert!(text.contains(kept), "`{kept}` lost:\n{text}");
        }
        let config = read_config(&home);
        assert_eq!(config["agents"]["defaults"]["workspace"], "~/work");
        assert_eq!(
            config["models"]["providers"]["openrouter"]["models"][0]["id"],
            "some/model"
        );
        assert_eq!(
            config["agents"]["defaults"]["subagents"]["model"],
            "orchestra/orchestra"
        );
        assert!(model_ids(&config).contains(&"orchestra".to_string()));
        let backups = std::fs::read_dir(home.join(".openclaw"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".bak-")
            })
            .count();
        assert_eq!(backups, 0, "an in-place edit needs no backup");

        let again = succeeded(&setup(&home, &["--url", &s.url, "--subagents"]).await);
        assert!(again.contains("nothing changed"), "{again}");
        assert_eq!(std::fs::read_to_string(config_path(&home)).unwrap(), text);
    });
}

#[test]
fn dry_run_prints_the_change_as_a_diff_and_writes_nothing() {
    runtime().block_on(async {
        let s = serve("openclaw_dry", ServeConfig::default()).await;
        let home = home("dry_run");
        std::fs::create_dir_all(home.join(".openclaw")).unwrap();
        std::fs::write(config_path(&home), USER_CONFIG).unwrap();

        let out = succeeded(&setup(&home, &["--url", &s.url, "--dry-run"]).await);
        assert!(out.contains("--- ") && out.contains("+++ "), "{out}");
        assert!(out.contains("@@"), "{out}");
        assert!(out.contains("+      orchestra: {"), "{out}");
        assert!(
            out.contains(&format!("+        baseUrl: \"{}\",", s.url)),
            "{out}"
        );
        assert!(out.contains("would be installed"), "{out}");
        assert!(out.contains("nothing was written"), "{out}");
        assert_eq!(
            std::fs::read_to_string(config_path(&home)).unwrap(),
            USER_CONFIG
        );
        assert!(!skill_path(&home).exists());
    });
}

#[test]
fn a_server_with_a_key_needs_it_and_the_provider_carries_it() {
    runtime().block_on(async {
        let config = ServeConfig {
            api_key: Some("sekrit".into()),
            ..ServeConfig::default()
        };
        let s = serve("openclaw_key", config).await;
        let home = home("key");
        let refused = setup(&home, &["--url", &s.url]).await;
        assert!(!refused.status.success());
        assert!(
            stderr(&refused).contains("--api-key"),
            "{}",
            stderr(&refused)
        );
        assert!(!config_path(&home).exists());

        succeeded(&setup(&home, &["--url", &s.url, "--api-key", "sekrit"]).await);
        let config = read_config(&home);
        assert_eq!(
            config["models"]["providers"]["orchestra"]["apiKey"],
            "sekrit"
        );
    });
}

#[test]
fn setup_from_a_score_reads_the_models_without_a_server() {
    runtime().block_on(async {
        let dir = scratch().join("openclaw_score");
        std::fs::create_dir_all(&dir).unwrap();
        let score = dir.join("score.lua");
        std::fs::write(
            &score,
            format!(
                r#"local band = orchestra.band {{ memory = "1GiB", sections = {{ "code", "review" }} }}
band:add("drone", {{ model = "{drone}", section = "code", context = 4096, max_tokens = 300 }})
band:add("hum", {{ model = "{drone}", section = "review", context = 2048, max_tokens = 100 }})
return {{ perform = function(req) return band.drone:generate(req.prompt) end }}
"#,
                drone = drone().display()
            ),
        )
        .unwrap();
        let home = home("from_score");
        let out = succeeded(
            &setup(
                &home,
                &[
                    "--score",
                    score.to_str().unwrap(),
                    "--url",
                    "http://127.0.0.1:9999/v1",
                    "--subagents",
                    "orchestra/review",
                ],
            )
            .await,
        );
        assert!(out.contains("score `"), "{out}");
        let config = read_config(&home);
        assert_eq!(
            model_ids(&config),
            ["orchestra", "orchestra/code", "orchestra/review", "drone", "hum"]
        );
        assert_eq!(model(&config, "orchestra")["contextWindow"], 4096);
        assert_eq!(model(&config, "orchestra")["maxTokens"], 300);
        assert_eq!(model(&config, "orchestra/review")["maxTokens"], 100);
        assert_eq!(
            config["models"]["providers"]["orchestra"]["baseUrl"],
            "http://127.0.0.1:9999/v1"
        );
        assert_eq!(
            config["agents"]["defaults"]["subagents"]["model"],
            "orchestra/orchestra/review"
        );

        let wrong = setup(
            &home,
            &["--score", score.to_str().unwrap(), "--subagents", "nobody"],
        )
        .await;
        assert!(!wrong.status.success());
        assert!(
            stderr(&wrong).contains("`--subagents nobody` names no model"),
            "{}",
            stderr(&wrong)
        );
    });
}

#[test]
fn an_unreachable_server_says_how_to_start_one() {
    runtime().block_on(async {
        let home = home("unreachable");
        // Nothing listens on a port just freed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = setup(&home, &["--url", &format!("http://127.0.0.1:{port}/v1")]).await;
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("orchestra serve") && err.contains("--score"),
            "{err}"
        );
        assert!(!config_path(&home).exists());
    });
}

#[test]
fn an_invalid_config_is_left_alone() {
    runtime().block_on(async {
        let s = serve("openclaw_invalid", ServeConfig::default()).await;
        let home = home("invalid");
        std::fs::create_dir_all(home.join(".openclaw")).unwrap();
        let broken = "{ models: { providers: ";
        std::fs::write(config_path(&home), broken).unwrap();
        let out = setup(&home, &["--url", &s.url]).await;
        assert!(!out.status.success());
        assert!(stderr(&out).contains("not valid JSON5"), "{}", stderr(&out));
        assert_eq!(std::fs::read_to_string(config_path(&home)).unwrap(), broken);
    });
}

/// A score whose code soloist has `context` tokens.
fn agent_score(test: &str, context: u32) -> PathBuf {
    let dir = scratch().join(test);
    std::fs::create_dir_all(&dir).unwrap();
    let score = dir.join("score.lua");
    std::fs::write(
        &score,
        format!(
            r#"local band = orchestra.band {{ memory = "4GiB", sections = {{ "code", "review" }} }}
band:add("drone", {{ model = "{drone}", section = "code", context = {context}, slots = 1, kv_cache = "q8_0" }})
band:add("hum", {{ model = "{drone}", section = "review", context = 2048 }})
return {{ perform = function(req) return band.drone:generate(req.prompt) end }}
"#,
            drone = drone().display()
        ),
    )
    .unwrap();
    score
}

#[test]
fn setup_refuses_a_score_too_small_for_openclaws_prompt_and_says_what_to_change() {
    runtime().block_on(async {
        let small = agent_score("openclaw_small", 4096);
        let home = home("too_small");
        let out = setup_strict(&home, &["--score", small.to_str().unwrap()]).await;
        assert!(!out.status.success(), "{}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains("`orchestra` can take 4096 tokens")
                && err.contains("give instrument `drone` `context = 32768`")
                && err.contains("--allow-small-context"),
            "{err}"
        );
        assert!(!config_path(&home).exists(), "nothing was written");
        // `check` says the same before anyone runs setup.
        let check = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestra"))
            .args(["check", small.to_str().unwrap()])
            .output()
            .await
            .unwrap();
        let said = stdout(&check);
        assert!(check.status.success(), "{said}{}", stderr(&check));
        assert!(
            said.contains("warning: `orchestra` takes 4096 tokens (drone), too few for an agent"),
            "{said}"
        );
        // With a 32k soloist it goes through, and OpenClaw learns the real window.
        let roomy = agent_score("openclaw_roomy", 32768);
        succeeded(&setup_strict(&home, &["--score", roomy.to_str().unwrap()]).await);
        let config = read_config(&home);
        assert_eq!(model(&config, "orchestra")["contextWindow"], 32768);
        assert_eq!(model(&config, "hum")["contextWindow"], 2048);
        let check = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestra"))
            .args(["check", roomy.to_str().unwrap()])
            .output()
            .await
            .unwrap();
        assert!(
            stdout(&check)
                .contains("agents: `orchestra` takes 32768 tokens, room for OpenClaw's prompt"),
            "{}",
            stdout(&check)
        );
    });
}
