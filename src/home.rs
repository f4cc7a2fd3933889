//! Where orchestra keeps the files it writes itself (rehearsal, benchmark and test
//! models). Shared by the library and the CLI, so neither has to import the other.

use std::path::PathBuf;

/// `$ORCHESTRA_HOME`, else the user's cache dir (`~/.cache/orchestra`).
pub fn orchestra_home() -> PathBuf {
    if let Some(p) = std::env::var_os("ORCHESTRA_HOME") {
        return PathBuf::from(p);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("orchestra")
}
