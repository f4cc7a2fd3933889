//! `orchestra voice "TEXT"`: sends one spoken command to a running server's
//! `/api/voice`, prints the reply (or the whole answer with `--json`) and speaks it
//! with `--say CMD`.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use crate::narrate::Speaker;

#[derive(Debug, Args)]
pub struct VoiceArgs {
    /// What was said: "who's soloing?", "make ella the creative lead", "jam on ...".
    pub text: String,
    /// The server's address (`orchestra serve` prints it).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The server's API key, when it has one.
    #[arg(long, env = "ORCHESTRA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Speak the reply with this command: `{}` is replaced by the reply, otherwise it
    /// goes to the command's stdin (`espeak-ng --stdin`, `say`).
    #[arg(long, value_name = "CMD")]
    pub say: Option<String>,
    /// Print the whole answer (intent, arguments, action, reply) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `/api/voice` of the server at `url` (which may end in `/` or `/v1`).
fn endpoint(url: &str) -> String {
    let base = url.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    format!("{base}/api/voice")
}

pub async fn run(args: VoiceArgs) -> anyhow::Result<()> {
    let url = endpoint(&args.url);
    let mut req = reqwest::Client::new()
        .post(&url)
        .timeout(Duration::from_secs(60))
        .json(&serde_json::json!({ "text": args.text }));
    if let Some(k) = args.api_key.as_deref().filter(|k| !k.is_empty()) {
        req = req.bearer_auth(k);
    }
    let res = req.send().await.with_context(|| {
        format!("cannot reach `{url}`: is `orchestra serve` running there? (`--url`)")
    })?;
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    if !status.is_success() {
        let hint = if status.as_u16() == 401 {
            ": give the server's key with `--api-key` or ORCHESTRA_API_KEY"
        } else {
            ""
        };
        anyhow::bail!("`{url}` answered {status}{hint}: {}", body.trim());
    }
    let answer: Value = serde_json::from_str(&body)
        .with_context(|| format!("`{url}` did not answer a voice reply"))?;
    let reply = answer["reply"].as_str().unwrap_or_default().to_string();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!("{reply}");
    }
    if let Some(cmd) = args.say {
        let speaker = Speaker::new(cmd.clone());
        tokio::task::spawn_blocking(move || speaker.say(&reply))
            .await?
            .with_context(|| format!("`--say {cmd}` could not speak the reply"))?;
    }
    Ok(())
}
