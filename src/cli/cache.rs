//! `orchestra cache`: list and clear the prefix snapshots (the KV state of long prompt
//! prefixes kept under `$ORCHESTRA_HOME/cache/prefix`). Reads and deletes files only;
//! the engine owns their format.

use std::path::PathBuf;
use std::time::SystemTime;

use bytesize::ByteSize;
use clap::{Args, Subcommand};

use crate::engine::{clear_snapshots, default_snapshot_dir, list_snapshots};

#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub action: Option<CacheAction>,
    /// The snapshot folder (default: `$ORCHESTRA_HOME/cache/prefix`).
    #[arg(long, global = true)]
    pub dir: Option<PathBuf>,
    /// One JSON object per snapshot (`orchestra cache --json` or `cache list --json`).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CacheAction {
    /// List the snapshots, most recently used first, with counts and sizes per model
    /// (the default).
    List,
    /// Delete every snapshot (prompts are computed again and re-snapshotted).
    Clear,
}

pub fn run(args: CacheArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(default_snapshot_dir);
    match args.action.unwrap_or(CacheAction::List) {
        CacheAction::List => list(&dir, args.json),
        CacheAction::Clear => {
            let (count, bytes) = clear_snapshots(&dir).map_err(|e| {
                anyhow::anyhow!(
                    "cannot clear the prefix snapshots in `{}`: {e}",
                    dir.display()
                )
            })?;
            println!(
                "removed {count} prefix snapshot{} ({}) from {}",
                if count == 1 { "" } else { "s" },
                ByteSize::b(bytes),
                dir.display()
            );
            Ok(())
        }
    }
}

fn list(dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let files = list_snapshots(dir);
    if json {
        for f in &files {
            let line = serde_json::json!({
                "path": f.path,
                "model": f.model,
                "tokens": f.tokens,
                "bytes": f.bytes,
                "last_used": humantime::format_rfc3339_seconds(f.last_used).to_string(),
            });
            println!("{line}");
        }
        return Ok(());
    }
    if files.is_empty() {
        println!("no prefix snapshots in {}", dir.display());
        return Ok(());
    }
    let width = files
        .iter()
        .map(|f| f.model.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<width$} {:>8} {:>10}  last used",
        "model", "tokens", "size"
    );
    let now = SystemTime::now();
    for f in &files {
        let ago = now
            .duration_since(f.last_used)
            .map(|d| std::time::Duration::from_secs(d.as_secs()))
            .unwrap_or_default();
        println!(
            "{:<width$} {:>8} {:>10}  {} ago",
            f.model,
            f.tokens,
            ByteSize::b(f.bytes).to_string(),
            humantime::format_duration(ago)
        );
    }
    // Per model: how many and how much.
    let mut models: Vec<(&str, usize, u64)> = Vec::new();
    for f in &files {
        match models.iter_mut().find(|m| m.0 == f.model) {
            Some(m) => {
                m.1 += 1;
                m.2 += f.bytes;
            }
            None => models.push((&f.model, 1, f.bytes)),
        }
    }
    println!();
    for (model, count, bytes) in &models {
        println!(
            "{model}: {count} snapshot{}, {}",
            plural(*count),
            ByteSize::b(*bytes)
        );
    }
    let total: u64 = files.iter().map(|f| f.bytes).sum();
    println!(
        "total: {} snapshot{}, {} in {}",
        files.len(),
        plural(files.len()),
        ByteSize::b(total),
        dir.display()
    );
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
