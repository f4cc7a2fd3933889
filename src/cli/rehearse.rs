//! `orchestra rehearse`: the offline demo. Writes the rehearsal band (four synthetic
//! models, one per section, named after jazz musicians) into the cache and plays
//! `scores/rehearsal.lua` (embedded in the binary) on it: routing, comping, the solo and
//! the review, with the narration and the arrangement trace.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct RehearseArgs {
    /// The request to play.
    #[arg(default_value = "write a function that reverses a string")]
    pub prompt: String,
    /// Where the rehearsal band is written (default: the orchestra cache).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Speak the narration with a text-to-speech command (see `play --say`).
    #[arg(long, value_name = "CMD")]
    pub say: Option<String>,
}

pub async fn run(args: RehearseArgs) -> anyhow::Result<()> {
    super::play::rehearse(&args.prompt, args.dir, args.say).await
}
