//! Synthetic GGUF models. Writes llama-architecture models that real llama.cpp loads
//! and runs — random ones for tests and benchmarks, and rehearsal models whose greedy
//! output is a fixed script. Reading GGUF files is [`crate::gguf`]'s; production code
//! never goes through this writer. Never imports `llama_cpp_2`: only `engine` runs
//! models.
//!
//! # Layout
//! - `gguf`: q8_0/f16 encoding and the streaming [`GgufWriter`], on the container
//!   types of [`crate::gguf`].
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
//! let header = orchestra::gguf::read_header("ella.gguf")?;
//! assert_eq!(header.architecture(), Some("llama"));
//! # Ok(())
//! # }
//! ```

mod error;
mod gguf;
mod model;
mod rehearsal;
mod vocab;

pub use error::{GgufError, SynthError};
pub use gguf::{GgufWriter, TensorType, dequantize_q8_0, quantize_q8_0};
pub use model::{
    CHATML_TEMPLATE, LlamaSpec, ReplayChain, Weights, bench_spec, model_writer, tiny_spec,
    write_model, write_model_with,
};
pub use rehearsal::{
    BAND_DTYPE, REHEARSAL_FORMAT, REHEARSAL_FORMAT_KEY, REHEARSAL_SCRIPT_KEY, RehearsalInfo,
    RehearsalMember, rehearsal_band, rehearsal_script, split_script, write_rehearsal_band,
    write_rehearsal_model,
};
pub use vocab::{SPACE, TokenKind, Vocab, VocabToken};
