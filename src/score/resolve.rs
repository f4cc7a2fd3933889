//! Model references in scores → files on disk. Local paths resolve against the score's
//! folder; `hf:` references resolve through the hub's cache.

use std::path::{Path, PathBuf};

use super::error::ScoreError;

/// The GGUF file a score's `model = "..."` names.
///
/// Local paths (`~/` expanded, relative paths against `score_dir`) must exist.
/// `hf:ORG/REPO/FILE.gguf` references (and huggingface.co URLs) must have been
/// downloaded already: the error says to run `orchestra pull`.
pub fn resolve_model(reference: &str, score_dir: &Path) -> Result<PathBuf, ScoreError> {
    let r = reference.trim();
    if r.is_empty() {
        return Err(ScoreError::Model(
            "`model` is empty: give a GGUF path or an `hf:ORG/REPO/FILE.gguf` reference".into(),
        ));
    }
    if r.starts_with("hf:") || r.starts_with("https://") || r.starts_with("http://") {
        return Err(ScoreError::Model(format!(
            "model `{r}` is not downloaded yet: run `orchestra pull SCORE` first"
        )));
    }
    let path = if let Some(rest) = r.strip_prefix("~/") {
        dirs::home_dir().unwrap_or_default().join(rest)
    } else {
        PathBuf::from(r)
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_references_ask_for_a_pull() {
        let e = resolve_model("hf:org/repo/x.gguf", Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("orchestra pull"), "{e}");
    }

    #[test]
    fn missing_local_files_say_where_they_were_looked_for() {
        let e = resolve_model("nope.gguf", Path::new("/tmp")).unwrap_err();
        assert!(e.to_string().contains("/tmp/nope.gguf"), "{e}");
    }
}
