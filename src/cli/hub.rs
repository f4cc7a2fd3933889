//! The hub commands as the CLI runs them — `orchestra pull`, `orchestra models [rm]`,
//! `orchestra search` — and the missing-model check `play` and `serve` run first: clap
//! arguments in, human-readable text and the download question on the terminal out.
//! The work itself is the library API in `hub/`; nothing here is needed to use it from
//! Rust.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::bail;
use indicatif::BinaryBytes;

use super::progress;
use crate::hub::cache::{self, CachedModel};
use crate::hub::{HubConfig, HubError, ModelRef, Progress, gguf, pull, scan, search, select};

/// `orchestra pull SCORE|REF...`
#[derive(Debug, Clone, clap::Args)]
pub struct PullArgs {
    /// Scores (`.lua`: every `hf:` model they name, found by a static scan) or model
    /// references (`hf:ORG/REPO/FILE.gguf`, `hf:ORG/REPO:Q4_K_M`, `…@REVISION`)
    #[arg(value_name = "SCORE|REF", required = true)]
    pub refs: Vec<String>,
}

/// `orchestra models [rm REF...]`
#[derive(Debug, Clone, clap::Args)]
pub struct ModelsArgs {
    /// What to do; without one, list the models
    #[command(subcommand)]
    pub command: Option<ModelsCommand>,
    /// Also list GGUF files under this folder (repeatable); `./models` is always looked at
    #[arg(long = "dir", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Also check these scores for which models they use (besides `./scores/*.lua`)
    #[arg(long = "score", value_name = "SCORE")]
    pub scores: Vec<PathBuf>,
}

/// `orchestra models` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ModelsCommand {
    /// Delete models from the Hugging Face cache (`hf:ORG/REPO` deletes the whole repo)
    Rm {
        /// Model references, as `orchestra models` lists them
        #[arg(value_name = "REF", required = true)]
        refs: Vec<String>,
    },
}

/// `orchestra search QUERY...`
#[derive(Debug, Clone, clap::Args)]
pub struct SearchArgs {
    /// Words to look for in repository names
    #[arg(value_name = "QUERY", required = true)]
    pub query: Vec<String>,
    /// How many repositories to show
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
}

/// `--pull` for every command that takes models (`play`, `serve`, `generate`,
/// `inspect`, the benchmarks): flatten it into their arguments.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct PullFlag {
    /// Download `hf:` models that are not in the cache, without asking
    #[arg(long)]
    pub pull: bool,
}

/// What to do when a score's models are not in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingModels {
    /// Ask on the terminal; fail when there is none.
    Ask,
    /// Download them.
    Pull,
    /// Fail, saying how to get them.
    Fail,
}

impl From<PullFlag> for MissingModels {
    fn from(flag: PullFlag) -> Self {
        if flag.pull {
            MissingModels::Pull
        } else {
            MissingModels::Ask
        }
    }
}

/// Runs `orchestra pull`: downloads what the scores and references need, one bar per
/// file, and prints where each model is.
pub async fn run_pull(args: PullArgs) -> anyhow::Result<()> {
    let refs = expand_args(&args.refs)?;
    if refs.is_empty() {
        bail!("nothing to pull: the scores name no `hf:` models");
    }
    let cfg = HubConfig::from_env();
    let results = pull::pull_each(&refs, &cfg, progress::bars()).await;
    let mut errors = Vec::new();
    for (reference, result) in refs.iter().zip(results) {
        match result {
            Ok(path) => println!(
                "ok  {reference}\n    {} ({})",
                path.display(),
                BinaryBytes(model_size(&path))
            ),
            Err(e) => errors.push(e),
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 if refs.len() == 1 => Err(errors.remove(0).into()),
        _ => Err(HubError::Several {
            total: refs.len(),
            errors,
        }
        .into()),
    }
}

/// Runs `orchestra models`: the GGUF models in the cache and local folders with
/// architecture, parameters, quantisation, size and the scores that use them; or
/// `models rm`.
pub async fn run_models(args: ModelsArgs) -> anyhow::Result<()> {
    let cfg = HubConfig::from_env();
    if let Some(ModelsCommand::Rm { refs }) = &args.command {
        return remove_models(refs, &cfg);
    }
    let report = tokio::task::spawn_blocking(move || models_report(&args, &cfg)).await??;
    print!("{report}");
    Ok(())
}

/// Runs `orchestra search`: GGUF repositories with downloads, likes and quantisations.
pub async fn run_search(args: SearchArgs) -> anyhow::Result<()> {
    let cfg = HubConfig::from_env();
    let query = args.query.join(" ");
    let hits = search::search(&query, &cfg, args.limit).await?;
    if hits.is_empty() {
        println!("no GGUF repositories match `{query}` on {}", cfg.endpoint);
        return Ok(());
    }
    let mut table = Table::new(["REPOSITORY", "DOWNLOADS", "LIKES", "QUANTISATIONS"]);
    for hit in &hits {
        let mut quants = hit.quants.clone();
        if quants.len() > 8 {
            let more = quants.len() - 8;
            quants.truncate(8);
            quants.push(format!("+{more}"));
        }
        let repo = if hit.gated {
            format!("{} (gated)", hit.repo)
        } else {
            hit.repo.clone()
        };
        table.row([
            repo,
            count(hit.downloads),
            count(hit.likes),
            quants.join(" "),
        ]);
    }
    print!("{}", table.render());
    let example = hits
        .iter()
        .find_map(|h| h.quants.first().map(|q| format!("hf:{}:{q}", h.repo)))
        .unwrap_or_else(|| format!("hf:{}", hits[0].repo));
    println!("\npull one with `orchestra pull {example}`");
    Ok(())
}

/// The local paths of `refs` (part 1 of split models), for `play` and `serve`: what the
/// cache has is used without network; what it lacks is pulled, asked for, or refused
/// according to `policy`, with the same progress bars as `orchestra pull`.
pub async fn ensure_models(
    refs: &[ModelRef],
    policy: MissingModels,
) -> anyhow::Result<Vec<PathBuf>> {
    ensure_models_with(refs, &HubConfig::from_env(), policy, progress::bars()).await
}

/// [`ensure_models`] with an explicit configuration and progress sink.
pub async fn ensure_models_with(
    refs: &[ModelRef],
    cfg: &HubConfig,
    policy: MissingModels,
    progress: Progress,
) -> anyhow::Result<Vec<PathBuf>> {
    let found: Vec<Option<PathBuf>> = {
        let (refs, cfg) = (refs.to_vec(), cfg.clone());
        tokio::task::spawn_blocking(move || {
            refs.iter().map(|r| pull::cached_path(r, &cfg)).collect()
        })
        .await?
    };
    let missing: Vec<ModelRef> = refs
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(r, _)| r.clone())
        .collect();
    if missing.is_empty() {
        return Ok(found.into_iter().flatten().collect());
    }
    if let Some(local) = missing.iter().find(|r| !r.is_hub()) {
        let ModelRef::Local(path) = local else {
            unreachable!()
        };
        return Err(HubError::LocalMissing { path: path.clone() }.into());
    }
    let list = missing
        .iter()
        .map(|r| format!("  {r}"))
        .collect::<Vec<_>>()
        .join("\n");
    let proceed = match policy {
        // Offline, the pull looks in the cache only and its error names what is missing.
        _ if cfg.offline => true,
        MissingModels::Pull => true,
        MissingModels::Fail => false,
        MissingModels::Ask if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() => {
            let question = format!(
                "{} model(s) are not in the cache at {}:\n{list}\ndownload them from {} now? [Y/n] ",
                missing.len(),
                cfg.cache_dir.display(),
                cfg.endpoint
            );
            tokio::task::spawn_blocking(move || ask(&question)).await??
        }
        MissingModels::Ask => false,
    };
    if !proceed {
        let names = missing
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        bail!(
            "{} model(s) are not in the cache at {}:\n{list}\nrun `orchestra pull {names}` first, or pass --pull",
            missing.len(),
            cfg.cache_dir.display()
        );
    }
    let pulled = pull::pull_all(&missing, cfg, progress).await?;
    let mut pulled = pulled.into_iter();
    Ok(found
        .into_iter()
        .map(|f| f.or_else(|| pulled.next()).unwrap_or_default())
        .collect())
}

fn ask(question: &str) -> anyhow::Result<bool> {
    eprint!("{question}");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    let answer = answer.trim().to_ascii_lowercase();
    Ok(answer.is_empty() || answer == "y" || answer == "yes")
}

/// The model references of the scores and references on a command line: an argument
/// ending in `.lua` is a score, anything else a reference.
pub fn expand_args(args: &[String]) -> anyhow::Result<Vec<ModelRef>> {
    let mut out: Vec<ModelRef> = Vec::new();
    for arg in args {
        let found: Vec<ModelRef> = if arg.to_ascii_lowercase().ends_with(".lua") {
            let models = scan::score_models(Path::new(arg))?;
            for m in &models {
                if let ModelRef::Local(path) = &m.reference
                    && !path.exists()
                {
                    eprintln!(
                        "score `{arg}` line {}: local model `{}` does not exist",
                        m.line,
                        path.display()
                    );
                }
            }
            let hub: Vec<ModelRef> = models
                .into_iter()
                .map(|m| m.reference)
                .filter(ModelRef::is_hub)
                .collect();
            if hub.is_empty() {
                eprintln!("score `{arg}` names no `hf:` models");
            }
            hub
        } else {
            vec![ModelRef::parse(arg)?]
        };
        for r in found {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

fn remove_models(refs: &[String], cfg: &HubConfig) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for text in refs {
        let result = ModelRef::parse(text)
            .map_err(HubError::from)
            .and_then(|r| cache::remove(&r, cfg).map(|removed| (r, removed)));
        match result {
            Ok((r, removed)) => {
                println!("removed {r} ({} freed)", BinaryBytes(removed.bytes_freed));
                for file in removed.files {
                    println!("    {file}");
                }
            }
            Err(e) => failed.push(e),
        }
    }
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0).into()),
        _ => Err(HubError::Several {
            total: refs.len(),
            errors: failed,
        }
        .into()),
    }
}

/// A GGUF model `orchestra models` lists: from the cache or a local folder.
struct Row {
    reference: ModelRef,
    parts: Vec<PathBuf>,
    size: u64,
    note: Option<String>,
}

/// The text `orchestra models` prints: a table of the GGUF models in the cache at
/// `cfg.cache_dir`, in `./models` and in `args.dirs`, with the scores (`./scores/*.lua`
/// and `args.scores`) that use them. Blocking: reads headers and scores.
pub fn models_report(args: &ModelsArgs, cfg: &HubConfig) -> anyhow::Result<String> {
    let cached = cache::list_cached(cfg);
    let mut rows: Vec<Row> = cached
        .iter()
        .map(|m| Row {
            reference: m.reference.clone(),
            parts: (1..=m.parts)
                .map(|i| match select::split_part(&m.file) {
                    Some((prefix, _, n)) => m.path.with_file_name(
                        Path::new(&select::part_name(&prefix, i as u32, n))
                            .file_name()
                            .unwrap_or_default(),
                    ),
                    None => m.path.clone(),
                })
                .collect(),
            size: m.size,
            note: (m.missing_parts > 0).then(|| format!("{} part(s) missing", m.missing_parts)),
        })
        .collect();

    let mut folders: Vec<PathBuf> = vec![PathBuf::from("models")];
    folders.extend(args.dirs.iter().cloned());
    for folder in folders {
        if !folder.is_dir() {
            if args.dirs.contains(&folder) {
                bail!(
                    "`{}` is not a folder: pass a folder of GGUF files to --dir",
                    folder.display()
                );
            }
            continue;
        }
        let files = local_ggufs(&folder);
        for candidate in select::models(&files) {
            let parts: Vec<PathBuf> = candidate.parts.iter().map(|p| folder.join(p)).collect();
            let size = parts
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            let reference = ModelRef::Local(folder.join(&candidate.first));
            if !rows.iter().any(|r| r.reference == reference) {
                rows.push(Row {
                    reference,
                    parts,
                    size,
                    note: None,
                });
            }
        }
    }

    let mut scores: Vec<PathBuf> = std::fs::read_dir("scores")
        .map(|it| {
            it.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "lua"))
                .collect()
        })
        .unwrap_or_default();
    scores.sort();
    scores.extend(args.scores.iter().cloned());
    let found_scores = scores.len() - args.scores.len();
    let mut uses: Vec<(String, Vec<ModelRef>)> = Vec::new();
    let mut notes = String::new();
    for (i, score) in scores.iter().enumerate() {
        let models = match scan::score_models(score) {
            Ok(models) => models,
            // A broken score in ./scores must not hide the list; one asked for by name
            // is an error.
            Err(e) if i < found_scores => {
                notes.push_str(&format!("note: {e}\n"));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let name = score
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        uses.push((name, models.into_iter().map(|m| m.reference).collect()));
    }

    let mut out = String::new();
    if rows.is_empty() {
        out.push_str(&format!(
            "no GGUF models in the cache at {} or in ./models\nfind some with `orchestra search QUERY`, then `orchestra pull hf:ORG/REPO:QUANT`\n",
            cfg.cache_dir.display()
        ));
        out.push_str(&notes);
        return Ok(out);
    }
    let mut table = Table::new(["MODEL", "ARCH", "PARAMS", "QUANT", "SIZE", "USED BY"]);
    let mut total = 0;
    for row in &rows {
        let summary = gguf::summarize(&row.parts).unwrap_or_default();
        let name = row.reference.to_string();
        let quant = summary
            .quant
            .clone()
            .or_else(|| select::quant_label(&name))
            .unwrap_or_else(|| "-".into());
        let used: Vec<&str> = uses
            .iter()
            .filter(|(_, refs)| refs.iter().any(|r| uses_model(r, row, &cached)))
            .map(|(n, _)| n.as_str())
            .collect();
        let mut size = BinaryBytes(row.size).to_string();
        if let Some(note) = &row.note {
            size.push_str(&format!(" ({note})"));
        }
        total += row.size;
        table.row([
            name,
            summary.architecture.unwrap_or_else(|| "-".into()),
            if summary.parameters > 0 {
                params(summary.parameters)
            } else {
                "-".into()
            },
            quant,
            size,
            if used.is_empty() {
                "-".into()
            } else {
                used.join(", ")
            },
        ]);
    }
    out.push_str(&table.render());
    out.push_str(&format!(
        "\n{} model(s), {} — cache: {}\n",
        rows.len(),
        BinaryBytes(total),
        cfg.cache_dir.display()
    ));
    out.push_str(&notes);
    Ok(out)
}

/// Whether a score's reference means this listed model.
fn uses_model(reference: &ModelRef, row: &Row, cached: &[CachedModel]) -> bool {
    match (reference, &row.reference) {
        (ModelRef::Local(a), ModelRef::Local(b)) => same_file(a, b),
        (
            ModelRef::Hub {
                repo, file, quant, ..
            },
            ModelRef::Hub {
                repo: row_repo,
                file: Some(row_file),
                ..
            },
        ) if repo == row_repo => match (file, quant) {
            (Some(f), _) => select::Candidate::for_file(f).first == *row_file,
            (None, q) => {
                let files: Vec<String> = cached
                    .iter()
                    .filter(|m| &m.repo == repo)
                    .map(|m| m.file.clone())
                    .collect();
                select::choose(&files, repo, q.as_deref(), "").is_ok_and(|c| c.first == *row_file)
            }
        },
        _ => false,
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The model GGUF files in `dir` and up to three folders below it, relative to `dir`.
fn local_ggufs(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .max_depth(4)
        .follow_links(true)
        .into_iter()
        .flatten()
        .filter(|e| !e.file_type().is_dir())
        .filter_map(|e| cache::relative_name(dir, e.path()))
        .filter(|rel| select::is_model_gguf(rel))
        .collect()
}

/// The bytes of a model on disk, all parts.
fn model_size(first: &Path) -> u64 {
    let name = first
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match select::split_part(name) {
        Some((prefix, _, n)) => (1..=n)
            .filter_map(|i| {
                std::fs::metadata(first.with_file_name(select::part_name(&prefix, i, n))).ok()
            })
            .map(|m| m.len())
            .sum(),
        None => std::fs::metadata(first).map(|m| m.len()).unwrap_or(0),
    }
}

/// `1.5B`, `135M`, `7.2K`.
fn params(n: u64) -> String {
    let n = n as f64;
    match n {
        x if x >= 1e9 => format!("{:.1}B", x / 1e9),
        x if x >= 1e6 => format!("{:.0}M", x / 1e6),
        x if x >= 1e3 => format!("{:.1}K", x / 1e3),
        x => format!("{x}"),
    }
}

/// `1.2M`, `34.5K`, `812`.
fn count(n: u64) -> String {
    let x = n as f64;
    match n {
        1_000_000.. => format!("{:.1}M", x / 1e6),
        1_000.. => format!("{:.1}K", x / 1e3),
        _ => n.to_string(),
    }
}

/// Left-aligned columns separated by two spaces, each as wide as its widest cell (the
/// tables of `models`, `search` and `status`).
pub(crate) struct Table<const N: usize> {
    rows: Vec<[String; N]>,
}

impl<const N: usize> Table<N> {
    pub(crate) fn new(header: [&str; N]) -> Self {
        Table {
            rows: vec![header.map(str::to_string)],
        }
    }

    pub(crate) fn row(&mut self, cells: [String; N]) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let widths: Vec<usize> = (0..N)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, w))| {
                    if i + 1 == N {
                        cell.clone()
                    } else {
                        format!("{cell:<w$}")
                    }
                })
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_model_cards() {
        assert_eq!(params(1_543_714_304), "1.5B");
        assert_eq!(params(134_515_008), "135M");
        assert_eq!(count(1_234_567), "1.2M");
        assert_eq!(count(999), "999");
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(["A", "BB"]);
        t.row(["long cell".into(), "x".into()]);
        assert_eq!(t.render(), "A          BB\nlong cell  x\n");
    }
}
