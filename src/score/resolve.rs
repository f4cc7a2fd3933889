//! Model references in scores → files on disk. Local paths resolve against the score's
//! folder; `hf:` references resolve through the hub's cache (never the network: pulls
//! are `orchestra pull`'s job).

use std::path::{Path, PathBuf};

use super::error::ScoreError;
use crate::hub::{HubConfig, ModelRef, cached_path};

/// The GGUF file a score's `model = "..."` names.
///
/// Local paths (`~/` expanded, relative paths against `score_dir`) must exist.
/// `hf:ORG/REPO/FILE.gguf` references (and huggingface.co URLs) resolve through the
/// hub's cache, without network: a model not downloaded yet is an error that says to
/// run `orchestra pull <score>` (`score`: the score as the user named it).
pub fn resolve_model(
    reference: &str,
    score_dir: &Path,
    score: &str,
) -> Result<PathBuf, ScoreError> {
    let r = reference.trim();
    if r.is_empty() {
        return Err(ScoreError::Model(
            "`model` is empty: give a GGUF path or an `hf:ORG/REPO/FILE.gguf` reference".into(),
        ));
    }
    let parsed = ModelRef::parse(r).map_err(|e| ScoreError::Model(e.to_string()))?;
    match parsed {
        ModelRef::Local(path) => {
            let full = if path.is_absolute() {
                path
            } else {
                score_dir.join(path)
            };
            if !full.is_file() {
                return Err(ScoreError::Model(format!(
                    "model file `{r}` does not exist (looked at `{}`): relative paths start at the score's folder",
                    full.display()
                )));
            }
            Ok(full)
        }
        hub => cached_path(&hub, &HubConfig::from_env()).ok_or_else(|| {
            ScoreError::Model(format!(
                "model `{r}` is not downloaded yet: run `orchestra pull {score}` first (or play a local file as this instrument with `--model-file NAME=FILE.gguf`)"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_references_ask_for_a_pull() {
        let e = resolve_model("hf:org/repo/x.gguf", Path::new("."), "scores/mine.lua").unwrap_err();
        assert!(
            e.to_string()
                .contains("run `orchestra pull scores/mine.lua`"),
            "{e}"
        );
    }

    #[test]
    fn missing_local_files_say_where_they_were_looked_for() {
        let e = resolve_model("nope.gguf", Path::new("/tmp"), "s.lua").unwrap_err();
        assert!(e.to_string().contains("/tmp/nope.gguf"), "{e}");
    }
}
