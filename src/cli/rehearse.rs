//! `orchestra rehearse`: the offline demo. Writes the rehearsal band (four synthetic
//! models, one per section) into the cache and plays a request on it.

use std::path::PathBuf;

use clap::Args;

use crate::engine::{GenerateRequest, LoadOptions, SamplingParams};
use crate::events::EventBus;
use crate::stage::{ModelSpec, Stage, StageConfig};

#[derive(Debug, Clone, Args)]
pub struct RehearseArgs {
    /// The request to play.
    #[arg(default_value = "write a function that reverses a string")]
    pub prompt: String,
    /// Where the rehearsal band is written (default: the orchestra cache).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The rehearsal band on disk (written when missing): (name, section, path).
pub fn band_on_disk(dir: Option<PathBuf>) -> anyhow::Result<Vec<(String, String, PathBuf)>> {
    let dir = dir.unwrap_or_else(|| super::orchestra_home().join("rehearsal"));
    let paths = crate::synth::write_rehearsal_band(&dir)?;
    Ok(crate::synth::rehearsal_band()
        .into_iter()
        .zip(paths)
        .map(|(m, p)| (m.name.to_string(), m.section.to_string(), p))
        .collect())
}

pub async fn run(args: RehearseArgs) -> anyhow::Result<()> {
    let band = band_on_disk(args.dir)?;
    let stage = Stage::new(StageConfig::default(), EventBus::new());
    for (name, _, path) in &band {
        stage.add(
            ModelSpec::new(name.clone(), path.clone()).with_options(LoadOptions {
                context: 512,
                slots: 2,
                ..LoadOptions::default()
            }),
        );
    }
    println!("request: {}", args.prompt);
    let mut tasks = Vec::new();
    for (name, section, _) in band {
        let stage = stage.clone();
        let prompt = args.prompt.clone();
        tasks.push(tokio::spawn(async move {
            let lease = stage.acquire(&name).await?;
            let c = lease
                .generate(
                    GenerateRequest::user(prompt)
                        .with_sampling(SamplingParams::greedy())
                        .with_max_tokens(96),
                )?
                .finish()
                .await?;
            anyhow::Ok((name, section, c))
        }));
    }
    for t in tasks {
        let (name, section, c) = t.await??;
        println!(
            "\n{name} ({section}), {:.0} tok/s:\n  {}",
            c.timings.decode_tok_s, c.text
        );
    }
    Ok(())
}
