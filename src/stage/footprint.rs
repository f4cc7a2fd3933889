//! Footprint estimates from a GGUF header, before anything is loaded: weights (the
//! tensor data, memory-mapped), the KV cache the context will allocate, and compute
//! buffers. The same formulas the engine reports after a load, so an estimate and a
//! real load differ only where llama.cpp rounds (context padding) or the file lies.

use std::path::Path;

use serde::Serialize;

use crate::engine::{LoadOptions, compute_buffer_bytes, kv_cache_bytes};

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
pub fn estimate(path: &Path, options: &LoadOptions) -> Result<Footprint, crate::synth::GgufError> {
    let h = crate::synth::read_header(path)?;
    let arch = h.architecture().unwrap_or("llama").to_owned();
    let key = |k: &str| h.get_u64(&format!("{arch}.{k}"));
    let n_layer = key("block_count").unwrap_or(1);
    let n_embd = key("embedding_length").unwrap_or(1);
    let n_head = key("attention.head_count").unwrap_or(1).max(1);
    let n_head_kv = key("attention.head_count_kv").unwrap_or(n_head);
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
        // llama.cpp pads the context to a multiple of 256 cells.
        let cells = context * options.slots.max(1) as u64;
        (cells.div_ceil(256) * 256, options.batch.max(32) as u64)
    };
    Ok(Footprint {
        weights: h.tensor_data_size(),
        kv: if options.embeddings {
            0
        } else {
            kv_cache_bytes(n_layer, n_ctx, n_embd, n_head, n_head_kv)
        },
        compute: compute_buffer_bytes(n_vocab, n_embd, batch, n_ctx),
    })
}
