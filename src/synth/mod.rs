//! Synthetic GGUF models and GGUF header reading. Writes llama-architecture models
//! that real llama.cpp loads and runs — random ones for tests and benchmarks, and
//! rehearsal models whose greedy output is a fixed script — and reads any GGUF
//! header for `inspect`. Never imports `llama_cpp_2`: only `engine` runs models.
//!
//! # Layout
//! - `gguf`: the container — metadata values, ggml type table, q8_0/f16 encoding,
//!   the streaming [`GgufWriter`].
//! - `read`: [`read_header`] and [`GgufHeader`]'s accessors.
//! - `vocab`: SentencePiece-style [`Vocab`] (`<unk>`, `<s>`, `</s>`, ChatML tokens,
//!   byte tokens, `▁`, ASCII, common words).
//! - `model`: [`LlamaSpec`], [`write_model`], [`tiny_spec`], [`bench_spec`].
//! - `rehearsal`: [`write_rehearsal_model`] and the four-member rehearsal band.
//!
//! ```no_run
//! use orchestra::synth::{self, TensorType};
//! # fn main() -> Result<(), orchestra::synth::SynthError> {
//! let info = synth::write_rehearsal_model("ella", "Moonlight hums.", "ella.gguf", TensorType::Q8_0)?;
//! assert_eq!(info.text, "Moonlight hums.");
//! let header = synth::read_header("ella.gguf")?;
//! assert_eq!(header.architecture(), Some("llama"));
//! # Ok(())
//! # }
//! ```

mod error;
mod gguf;
mod model;
mod read;
mod rehearsal;
#[cfg(test)]
mod testutil;
mod vocab;

pub use error::{GgufError, SynthError};
pub use gguf::{
    DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, GgmlType, GgufWriter, MetaArray, MetaValue,
    TensorType, dequantize_q8_0, quantize_q8_0,
};
pub use model::{
    CHATML_TEMPLATE, LlamaSpec, ReplayChain, Weights, bench_spec, model_writer, tiny_spec,
    write_model, write_model_with,
};
pub use read::{GgufHeader, TensorInfo, read_header};
pub use rehearsal::{
    BAND_DTYPE, REHEARSAL_FORMAT, REHEARSAL_FORMAT_KEY, REHEARSAL_SCRIPT_KEY, RehearsalInfo,
    RehearsalMember, rehearsal_band, rehearsal_script, split_script, write_rehearsal_band,
    write_rehearsal_model,
};
pub use vocab::{SPACE, TokenKind, Vocab, VocabToken};
