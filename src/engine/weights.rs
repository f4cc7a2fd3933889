//! Loaded weights shared between models: instruments that name the same GGUF file
//! (same canonical path, same file on disk, same GPU layers) share one `LlamaModel`,
//! each with its own context and worker. The weights are freed when the last model
//! using them goes. Only the weights are shared here; contexts are never shared.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::SystemTime;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;

use super::backend::backend;
use super::error::EngineError;

/// What identifies one loaded copy of a file's weights. The size and modification time
/// tell a file replaced under the same path apart from the one already loaded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    gpu_layers: u32,
}

impl Key {
    fn of(path: &Path, gpu_layers: u32) -> Key {
        let meta = std::fs::metadata(path).ok();
        Key {
            path: path.canonicalize().unwrap_or_else(|_| path.to_path_buf()),
            len: meta.as_ref().map_or(0, |m| m.len()),
            modified: meta.and_then(|m| m.modified().ok()),
            gpu_layers,
        }
    }
}

/// One file's weights: who loads them (the lock serialises a second load of the same
/// file behind the first, which then finds them loaded) and the copy in use, if any.
#[derive(Default)]
struct Slot {
    weights: Mutex<Weak<LlamaModel>>,
    /// Held while a context of these weights is created: two contexts of one model
    /// are never created at the same moment (see PITFALLS).
    new_context: Arc<Mutex<()>>,
}

static LOADED: LazyLock<Mutex<HashMap<Key, Arc<Slot>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A model's weights, loaded now or shared with models already using them.
pub(crate) struct SharedWeights {
    pub(crate) llama: Arc<LlamaModel>,
    /// Whether another model already had them loaded (llama.cpp did not load again).
    pub(crate) reused: bool,
    /// Lock to hold while creating a context of these weights.
    pub(crate) new_context: Arc<Mutex<()>>,
}

/// The weights of `path` with `gpu_layers` offloaded: the copy another model already
/// uses, or a fresh load reporting llama.cpp's progress (0.0 to 1.0).
pub(crate) fn load_shared(
    path: &Path,
    gpu_layers: u32,
    mut progress: impl FnMut(f32) + Send + 'static,
) -> Result<SharedWeights, EngineError> {
    let key = Key::of(path, gpu_layers);
    let slot = {
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        // Forget files nobody uses any more (a slot being loaded is locked: kept).
        loaded.retain(|_, s| {
            Arc::strong_count(s) > 1 || s.weights.try_lock().map_or(true, |w| w.strong_count() > 0)
        });
        loaded.entry(key).or_default().clone()
    };
    let mut weights = slot.weights.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(llama) = weights.upgrade() {
        progress(1.0);
        return Ok(SharedWeights {
            llama,
            reused: true,
            new_context: slot.new_context.clone(),
        });
    }
    // LlamaModelParams is not Send: built on the thread that loads.
    let params = LlamaModelParams::default()
        .with_n_gpu_layers(gpu_layers)
        .with_progress_callback(move |p| {
            progress(p);
            true
        });
    let llama = LlamaModel::load_from_file(backend(), path, &params)
        .map(Arc::new)
        .map_err(|_| EngineError::LoadFailed(path.to_path_buf()))?;
    *weights = Arc::downgrade(&llama);
    Ok(SharedWeights {
        llama,
        reused: false,
        new_context: slot.new_context.clone(),
    })
}
