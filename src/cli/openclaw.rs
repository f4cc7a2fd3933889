//! `orchestra openclaw setup`: makes the orchestra a model provider of OpenClaw — the
//! `orchestra` provider in `openclaw.json` (edited in place, comments kept) and the
//! orchestra skill in OpenClaw's skills folder. It reads a running server or a score;
//! it never starts a model.

mod edit;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::score::{Conductor, ScoreInfo, ScoreOptions, ScoreSource};

/// The skill taught to OpenClaw's agent, installed as `skills/orchestra/SKILL.md`.
pub const SKILL: &str = include_str!("../../integrations/openclaw/orchestra/SKILL.md");

/// The provider id in OpenClaw's configuration: model refs read `orchestra/<id>`.
pub const PROVIDER: &str = "orchestra";

/// Where `orchestra serve` listens unless told otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080/v1";

#[derive(Debug, Clone, Args)]
pub struct OpenclawArgs {
    #[command(subcommand)]
    pub command: OpenclawCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum OpenclawCommand {
    /// Add the orchestra to OpenClaw: the `orchestra` model provider in openclaw.json
    /// (comments and other settings kept) and the orchestra skill. Safe to run again.
    ///
    /// Example: orchestra openclaw setup --subagents --dry-run
    Setup(SetupArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SetupArgs {
    /// Read the models from this score instead of a running server (nothing is loaded).
    #[arg(long)]
    pub score: Option<PathBuf>,
    /// The server's OpenAI base URL, as OpenClaw will call it.
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,
    /// The server's API key (`orchestra serve --api-key`); written into the provider.
    #[arg(long, env = "ORCHESTRA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Also make an orchestra model the default model of the sub-agents OpenClaw spawns
    /// (`agents.defaults.subagents.model`): `orchestra` unless a model id is given.
    #[arg(long, value_name = "MODEL", num_args = 0..=1, default_missing_value = "orchestra")]
    pub subagents: Option<String>,
    /// Print what would change as a diff and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Set up even when the orchestra's models cannot take OpenClaw's prompt (about
    /// 16k tokens with its default tools): it will answer agents with errors.
    #[arg(long)]
    pub allow_small_context: bool,
    /// OpenClaw's configuration file (default: $OPENCLAW_CONFIG_PATH, else
    /// $OPENCLAW_STATE_DIR/openclaw.json, else ~/.openclaw/openclaw.json).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub models: super::ModelFileArgs,
}

/// One model id the server answers, as OpenClaw's catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedModel {
    pub id: String,
    pub name: String,
    pub context: u32,
    pub max_tokens: u32,
}

pub async fn run(args: OpenclawArgs) -> anyhow::Result<()> {
    match args.command {
        OpenclawCommand::Setup(a) => setup(a).await,
    }
}

async fn setup(args: SetupArgs) -> anyhow::Result<()> {
    let url = args.url.trim_end_matches('/').to_string();
    let (models, from) = match &args.score {
        Some(score) => {
            let models = models_from_score(score, &args.models).await?;
            (models, format!("score `{}`", score.display()))
        }
        None => (
            models_from_server(&url, args.api_key.as_deref()).await?,
            format!("the server at {url}"),
        ),
    };
    if models.is_empty() {
        bail!("{from} serves no chat model: add an instrument that is not `embeddings = true`");
    }
    let subagent = match &args.subagents {
        Some(id) => {
            // A served id (`orchestra/code`) or the full ref (`orchestra/orchestra/code`).
            let id = if models.iter().any(|m| m.id == *id) {
                id.as_str()
            } else {
                id.strip_prefix("orchestra/").unwrap_or(id)
            };
            if !models.iter().any(|m| m.id == id) {
                bail!(
                    "`--subagents {id}` names no model of {from}; its models are {}",
                    list_ids(&models)
                );
            }
            Some(model_ref(id))
        }
        None => None,
    };
    if !args.allow_small_context {
        let mut used = vec!["orchestra"];
        if let Some(r) = &subagent {
            used.push(r.strip_prefix("orchestra/").unwrap_or(r));
        }
        for id in used {
            if let Some(problem) = too_small_for_agents(&models, id) {
                bail!("{problem} (in {from}), or pass `--allow-small-context` to set it up anyway");
            }
        }
    }
    let provider = provider_entry(&url, args.api_key.as_deref(), &models);
    let paths = Paths::resolve(args.config.clone())?;
    let current = match std::fs::read_to_string(&paths.config) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading `{}`", paths.config.display())),
    };
    let plan = plan_config(current.as_deref(), &provider, subagent.as_deref())
        .with_context(|| format!("OpenClaw's config `{}`", paths.config.display()))?;
    let skill_now = std::fs::read_to_string(&paths.skill).ok();
    let skill_changes = skill_now.as_deref() != Some(SKILL);

    println!("models from {from}: {}", list_ids(&models));
    if args.dry_run {
        print_dry_run(
            &paths,
            current.as_deref(),
            &plan,
            skill_now.as_deref(),
            skill_changes,
        );
        return Ok(());
    }
    match &plan.text {
        None => println!("`{}`: already up to date", paths.config.display()),
        Some(text) => {
            if plan.rewritten
                && let Some(old) = &current
            {
                let backup = backup_path(&paths.config);
                std::fs::write(&backup, old)
                    .with_context(|| format!("writing the backup `{}`", backup.display()))?;
                println!(
                    "`{}` could not be edited in place: its comments are kept in the backup `{}`",
                    paths.config.display(),
                    backup.display()
                );
            }
            write_atomically(&paths.config, text)?;
            println!("`{}`: {}", paths.config.display(), plan.changes.join("; "));
        }
    }
    if skill_changes {
        write_atomically(&paths.skill, SKILL)?;
        println!(
            "skill `{}`: {}",
            paths.skill.display(),
            if skill_now.is_some() {
                "updated"
            } else {
                "installed"
            }
        );
    } else {
        println!("skill `{}`: already up to date", paths.skill.display());
    }
    if plan.text.is_none() && !skill_changes {
        println!("nothing changed");
    }
    println!(
        "try: openclaw agent --local --model {} --message \"hello\"   (or `openclaw models set {}`)",
        model_ref("orchestra"),
        model_ref("orchestra")
    );
    Ok(())
}

/// Why model `id` cannot play OpenClaw's turns, if it cannot: its window is smaller
/// than OpenClaw's default prompt. Names the instrument that sets the window.
pub fn too_small_for_agents(models: &[ServedModel], id: &str) -> Option<String> {
    use crate::score::{AGENT_CONTEXT, AGENT_PROMPT_TOKENS};
    let m = models.iter().find(|m| m.id == id)?;
    if m.context >= AGENT_PROMPT_TOKENS {
        return None;
    }
    let narrowest = models
        .iter()
        .filter(|i| !i.id.starts_with("orchestra"))
        .find(|i| i.context == m.context)
        .map(|i| i.id.as_str())
        .unwrap_or(id);
    Some(format!(
        "`{id}` can take {} tokens, but OpenClaw's default prompt is about {AGENT_PROMPT_TOKENS} and its sessions grow past that: give instrument `{narrowest}` `context = {AGENT_CONTEXT}` (with `slots = 1` it costs one slot's KV cache)",
        m.context
    ))
}

fn list_ids(models: &[ServedModel]) -> String {
    models
        .iter()
        .map(|m| format!("`{}`", m.id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The model ref OpenClaw uses for a served id: `orchestra/<id>`.
pub fn model_ref(id: &str) -> String {
    format!("{PROVIDER}/{id}")
}

/// Where OpenClaw keeps its configuration and its managed skills.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    pub skill: PathBuf,
}

impl Paths {
    /// OpenClaw's own lookup: `$OPENCLAW_CONFIG_PATH`, `$OPENCLAW_STATE_DIR`, `~/.openclaw`.
    pub fn resolve(config: Option<PathBuf>) -> anyhow::Result<Self> {
        let state = match std::env::var_os("OPENCLAW_STATE_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => dirs::home_dir()
                .context("no home folder: set HOME, or OPENCLAW_STATE_DIR to OpenClaw's folder")?
                .join(".openclaw"),
        };
        let config = config
            .or_else(|| {
                std::env::var_os("OPENCLAW_CONFIG_PATH")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| state.join("openclaw.json"));
        Ok(Self {
            config,
            skill: state.join("skills").join("orchestra").join("SKILL.md"),
        })
    }
}

/// The models of a running server, from `GET {url}/models`.
pub async fn models_from_server(
    url: &str,
    api_key: Option<&str>,
) -> anyhow::Result<Vec<ServedModel>> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let mut req = client.get(format!("{url}/models"));
    if let Some(key) = api_key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the orchestra at `{url}` ({e}): start it with `orchestra serve SCORE`, pass --url, or read the models from the score with --score SCORE"
        )
    })?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        bail!(
            "the server at `{url}` wants an API key: pass --api-key KEY or set ORCHESTRA_API_KEY"
        );
    }
    if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        bail!("the server at `{url}` is still loading its score: try again in a moment");
    }
    if !status.is_success() {
        bail!("`GET {url}/models` answered {status}: is `{url}` an orchestra server?");
    }
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("`GET {url}/models` did not answer JSON"))?;
    let data = body["data"]
        .as_array()
        .with_context(|| format!("`GET {url}/models` has no `data` list"))?;
    Ok(models_from_list(data))
}

/// The models a server lists (`/v1/models` entries): sections and the whole arrangement
/// get the largest answer length of their instruments.
pub fn models_from_list(data: &[Value]) -> Vec<ServedModel> {
    let u32_of = |v: &Value| v.as_u64().map_or(0, |n| n.min(u32::MAX as u64) as u32);
    let instruments: Vec<&Value> = data.iter().filter(|m| m["kind"] == "instrument").collect();
    let widest = |section: Option<&str>| {
        instruments
            .iter()
            .filter(|i| section.is_none_or(|s| i["section"] == s))
            .map(|i| u32_of(&i["max_tokens"]))
            .max()
            .unwrap_or(0)
    };
    data.iter()
        .filter(|m| m["kind"] != "embeddings")
        .filter_map(|m| {
            let id = m["id"].as_str()?.to_string();
            let context = u32_of(&m["context_length"]);
            let (name, max_tokens) = match m["kind"].as_str() {
                Some("arrangement") => ("Orchestra: the whole score".to_string(), widest(None)),
                Some("section") => {
                    let section = id.strip_prefix("orchestra/").unwrap_or(&id).to_string();
                    (
                        format!("Orchestra: the {section} section"),
                        widest(Some(&section)),
                    )
                }
                _ => (
                    format!(
                        "Orchestra: {id} ({})",
                        m["section"].as_str().unwrap_or("instrument")
                    ),
                    u32_of(&m["max_tokens"]),
                ),
            };
            Some(ServedModel {
                id,
                name,
                context,
                max_tokens,
            })
        })
        .collect()
}

/// The models a score would serve, read with the score checked, not played.
pub async fn models_from_score(
    score: &Path,
    overrides: &super::ModelFileArgs,
) -> anyhow::Result<Vec<ServedModel>> {
    let options = overrides.apply(
        ScoreOptions::default()
            .with_check_only(true)
            .with_printer(std::sync::Arc::new(|_: &str| {})),
    );
    let conductor = Conductor::start(ScoreSource::file(score), options)
        .await
        .with_context(|| format!("loading score `{}`", score.display()))?;
    let info = conductor.info().await?;
    Ok(models_from_info(&info))
}

/// The ids `orchestra serve` would answer for this score, in the order it lists them.
pub fn models_from_info(info: &ScoreInfo) -> Vec<ServedModel> {
    let players: Vec<_> = info.instruments.iter().filter(|i| !i.embeddings).collect();
    // An arrangement's window is its narrowest soloist's: OpenClaw sizes its prompt by it.
    let widest = |section: Option<&str>| {
        info.window(section)
            .map_or((0, 0), |w| (w.context, w.max_tokens))
    };
    let mut out = Vec::new();
    let (context, max_tokens) = widest(None);
    out.push(ServedModel {
        id: crate::server::ORCHESTRA.to_string(),
        name: "Orchestra: the whole score".into(),
        context,
        max_tokens,
    });
    for s in &info.sections {
        if !players.iter().any(|i| &i.section == s) {
            continue;
        }
        let (context, max_tokens) = widest(Some(s));
        out.push(ServedModel {
            id: format!("{}/{s}", crate::server::ORCHESTRA),
            name: format!("Orchestra: the {s} section"),
            context,
            max_tokens,
        });
    }
    for i in players {
        out.push(ServedModel {
            id: i.name.clone(),
            name: format!("Orchestra: {} ({})", i.name, i.section),
            context: i.context,
            max_tokens: i.max_tokens,
        });
    }
    out
}

/// `models.providers.orchestra` as OpenClaw reads it.
pub fn provider_entry(url: &str, api_key: Option<&str>, models: &[ServedModel]) -> Value {
    let models: Vec<Value> = models
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "name": m.name,
                "reasoning": false,
                "input": ["text"],
                // Local models: nothing to bill.
                "cost": { "input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0 },
                "contextWindow": m.context,
                "maxTokens": m.max_tokens,
            })
        })
        .collect();
    let mut entry = json!({
        "baseUrl": url,
        "api": "openai-completions",
    });
    if let Some(key) = api_key.filter(|k| !k.is_empty()) {
        entry["apiKey"] = json!(key);
    }
    // Local models on small machines answer slowly: a long agent turn is not a hang.
    entry["timeoutSeconds"] = json!(600);
    entry["models"] = Value::Array(models);
    entry
}

/// What setup would do to OpenClaw's configuration.
#[derive(Debug, Clone)]
pub struct ConfigPlan {
    /// The new text; `None` when the file says all of it already.
    pub text: Option<String>,
    /// One phrase per change, for the user.
    pub changes: Vec<String>,
    /// The text could not be edited in place and was written anew (comments lost; the
    /// caller keeps a backup).
    pub rewritten: bool,
}

/// The configuration with the orchestra provider (and the sub-agent model) set, edited
/// in place so comments and every other setting stay.
pub fn plan_config(
    current: Option<&str>,
    provider: &Value,
    subagent_model: Option<&str>,
) -> anyhow::Result<ConfigPlan> {
    let text = current.unwrap_or("");
    let parsed: Value = if text.trim().is_empty() {
        json!({})
    } else {
        json5::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "it is not valid JSON5 ({e}): fix it (`openclaw doctor` helps) and run again"
            )
        })?
    };
    if !parsed.is_object() {
        bail!("it is not a JSON5 object: fix it and run again");
    }
    let provider_path = ["models", "providers", PROVIDER];
    let subagent_path = ["agents", "defaults", "subagents", "model"];
    let mut edits: Vec<(&[&str], Value, String)> = Vec::new();
    let now = pointer(&parsed, &provider_path);
    if now != Some(provider) {
        let what = if now.is_some() { "updated" } else { "added" };
        edits.push((
            &provider_path,
            provider.clone(),
            format!("{what} the model provider `{PROVIDER}`"),
        ));
    }
    if let Some(model) = subagent_model {
        let model = json!(model);
        if pointer(&parsed, &subagent_path) != Some(&model) {
            edits.push((
                &subagent_path,
                model.clone(),
                format!("sub-agents default to `{}`", model.as_str().unwrap_or("")),
            ));
        }
    }
    if edits.is_empty() {
        return Ok(ConfigPlan {
            text: None,
            changes: Vec::new(),
            rewritten: false,
        });
    }
    let mut want = parsed.clone();
    for (path, value, _) in &edits {
        set_pointer(&mut want, path, value.clone());
    }
    let changes: Vec<String> = edits.iter().map(|(_, _, c)| c.clone()).collect();
    // In place first; the result must parse to exactly what was meant, or the whole
    // file is written anew.
    let mut edited = Some(text.to_string());
    for (path, value, _) in &edits {
        edited = edited.and_then(|t| edit::set(&t, path, value).ok());
    }
    if let Some(t) = edited
        && json5::from_str::<Value>(&t).ok().as_ref() == Some(&want)
    {
        return Ok(ConfigPlan {
            text: Some(t),
            changes,
            rewritten: false,
        });
    }
    Ok(ConfigPlan {
        text: Some(serde_json::to_string_pretty(&want)? + "\n"),
        changes,
        rewritten: !text.trim().is_empty(),
    })
}

fn pointer<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.as_object()?.get(*k))
}

fn set_pointer(v: &mut Value, path: &[&str], value: Value) {
    let (last, parents) = path.split_last().expect("a path has a key");
    let mut at = v;
    for k in parents {
        if !at.get(*k).is_some_and(Value::is_object) {
            at[*k] = json!({});
        }
        at = at.get_mut(*k).expect("just made");
    }
    at[*last] = value;
}

fn print_dry_run(
    paths: &Paths,
    current: Option<&str>,
    plan: &ConfigPlan,
    skill_now: Option<&str>,
    skill_changes: bool,
) {
    match &plan.text {
        None => println!("`{}`: already up to date", paths.config.display()),
        Some(text) => {
            if plan.rewritten {
                println!(
                    "`{}` cannot be edited in place: it would be written anew, after a backup",
                    paths.config.display()
                );
            }
            print!(
                "{}",
                unified_diff(&paths.config, current.unwrap_or(""), text)
            );
        }
    }
    if !skill_changes {
        println!("skill `{}`: already up to date", paths.skill.display());
    } else if let Some(old) = skill_now {
        print!("{}", unified_diff(&paths.skill, old, SKILL));
    } else {
        println!(
            "skill `{}`: would be installed ({} lines)",
            paths.skill.display(),
            SKILL.lines().count()
        );
    }
    println!("dry run: nothing was written");
}

/// `old` → `new` as a unified diff of `path`.
pub fn unified_diff(path: &Path, old: &str, new: &str) -> String {
    let name = path.display().to_string();
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&name, &name)
        .to_string()
}

fn backup_path(config: &Path) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = config.file_name().map_or_else(
        || "openclaw.json".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    config.with_file_name(format!("{name}.bak-{stamp}"))
}

/// Writes through a temporary file and a rename, as OpenClaw does, so a reader never
/// sees half a file; a new file is private to the user (it may hold an API key).
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("writing `{}`", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let perms = std::fs::metadata(path)
            .map(|m| m.permissions())
            .unwrap_or_else(|_| std::fs::Permissions::from_mode(0o600));
        let _ = std::fs::set_permissions(&tmp, perms);
    }
    std::fs::rename(&tmp, path).with_context(|| format!("replacing `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> Vec<ServedModel> {
        models_from_list(&[
            json!({"id": "orchestra", "kind": "arrangement", "context_length": 4096}),
            json!({"id": "orchestra/code", "kind": "section", "context_length": 4096}),
            json!({"id": "coltrane", "kind": "instrument", "section": "code", "context_length": 4096, "max_tokens": 256}),
            json!({"id": "monk", "kind": "instrument", "section": "review", "context_length": 2048, "max_tokens": 512}),
            json!({"id": "duke", "kind": "embeddings", "section": "routing", "context_length": 256}),
        ])
    }

    #[test]
    fn sections_and_the_arrangement_answer_as_long_as_their_longest_instrument() {
        let m = models();
        let got: Vec<(&str, u32, u32)> = m
            .iter()
            .map(|m| (m.id.as_str(), m.context, m.max_tokens))
            .collect();
        assert_eq!(
            got,
            [
                ("orchestra", 4096, 512),
                ("orchestra/code", 4096, 256),
                ("coltrane", 4096, 256),
                ("monk", 2048, 512),
            ]
        );
    }

    #[test]
    fn the_provider_has_a_key_only_when_given_one() {
        let p = provider_entry(DEFAULT_URL, None, &models());
        assert!(p.get("apiKey").is_none());
        assert_eq!(p["api"], "openai-completions");
        assert_eq!(p["models"][0]["contextWindow"], 4096);
        let p = provider_entry(DEFAULT_URL, Some("k"), &models());
        assert_eq!(p["apiKey"], "k");
    }

    #[test]
    fn a_second_plan_changes_nothing() {
        let provider = provider_entry(DEFAULT_URL, None, &models());
        let first = plan_config(
            Some("{\n  // mine\n  gateway: { port: 1 },\n}\n"),
            &provider,
            Some("orchestra/orchestra"),
        )
        .unwrap();
        let text = first.text.unwrap();
        assert!(!first.rewritten);
        assert!(text.contains("// mine"));
        let second = plan_config(Some(&text), &provider, Some("orchestra/orchestra")).unwrap();
        assert!(second.text.is_none(), "{:?}", second.changes);
    }

    #[test]
    fn an_invalid_config_is_refused_not_overwritten() {
        let provider = provider_entry(DEFAULT_URL, None, &models());
        let err = plan_config(Some("{ models: "), &provider, None).unwrap_err();
        assert!(err.to_string().contains("not valid JSON5"), "{err}");
    }
}
