//! GGUF files as the orchestra reads them: the container's types, a header reader that
//! never touches tensor data, and the checks a file must pass before llama.cpp sees it.
//! Reads only; writing synthetic models is [`crate::synth`]'s. Never imports
//! `llama_cpp_2`.
//!
//! # Layout
//! - `types`: metadata values ([`MetaValue`], [`MetaArray`]), the ggml tensor type table
//!   ([`GgmlType`]), format constants.
//! - `read`: [`read_header`] and [`GgufHeader`]'s accessors; checks the file is long
//!   enough for what it declares.
//! - `validate`: [`validate`] — everything llama.cpp would assert on (and so abort the
//!   process) while loading: unique token strings, array lengths, tensor types, shapes,
//!   offsets and sizes, required keys.
//! - `error`: [`GgufError`].
//!
//! ```no_run
//! # fn main() -> Result<(), orchestra::gguf::GgufError> {
//! let header = orchestra::gguf::read_header("model.gguf")?;
//! orchestra::gguf::validate(&header)?;
//! println!("{} tensors of {:?}", header.tensors.len(), header.architecture());
//! # Ok(())
//! # }
//! ```

mod error;
mod read;
mod types;
mod validate;

pub use error::GgufError;
pub use read::{GgufHeader, TensorInfo, read_header};
pub(crate) use types::align_up;
pub use types::{
    DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, GgmlType, MAX_DIMS, MetaArray, MetaValue,
};
pub use validate::{read_validated, validate};
