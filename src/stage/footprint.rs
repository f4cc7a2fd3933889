//! Footprint estimates from a GGUF header, before anything is loaded: weights (the
//! tensor data, memory-mapped), the KV cache the context will allocate, and compute
//! buffers. After a load the engine reports what llama.cpp really allocated (see
//! [`ModelInfo`](crate::engine::ModelInfo)); these formulas are what it falls back to
//! when llama.cpp does not say, and the KV one matches llama.cpp's allocation exactly.

use std::path::Path;

use serde::Serialize;

use crate::engine::{KvShape, LoadOptions, compute_buffer_bytes, kv_cache_bytes_as};

/// Bytes a model takes when resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Footprint {
    pub weights: u64,
    pub kv: u64,
    pub compute: u64,
}

impl Footprint {
    pub fn total(&self) -> u64 {
        self.weights + self.kv + self.compute
    }
}

/// Estimate the footprint of loading `path` with `options`.
pub fn estimate(path: &Path, options: &LoadOptions) -> Result<Footprint, crate::gguf::GgufError> {
    let h = crate::gguf::read_header(path)?;
    let arch = h.architecture().unwrap_or("llama").to_owned();
    let key = |k: &str| h.get_u64(&format!("{arch}.{k}"));
    let n_embd = key("embedding_length").unwrap_or(1);
    let n_ctx_train = key("context_length").unwrap_or(4096).max(1);
    let n_vocab = h.vocab_size().unwrap_or(32000);
    let context = if options.context == 0 {
        n_ctx_train.min(4096)
    } else {
        options.context as u64
    };
    let (n_ctx, batch) = if options.embeddings {
        (context.max(64), context.max(64))
    } else {
        // llama.cpp pads the context to a multiple of 256 cells, then each slot's
        // share (one KV stream per slot) to a multiple of 256 again.
        let slots = options.slots.max(1) as u64;
        let cells = (context * slots).div_ceil(256) * 256;
        let per_slot = (cells / slots).div_ceil(256) * 256;
        (per_slot * slots, options.batch.max(32) as u64)
    };
    Ok(Footprint {
        weights: h.tensor_data_size(),
        kv: if options.embeddings {
            0
        } else {
            kv_cache_bytes_as(&KvShape::from_metadata(key), n_ctx, options.kv_cache)
        },
        compute: compute_buffer_bytes(
            n_vocab,
            n_embd,
            key("feed_forward_length").unwrap_or(4 * n_embd),
            batch,
            n_ctx,
            if options.embeddings {
                1
            } else {
                options.slots.max(1) as u64
            },
        ),
    })
}
