//! The one llama.cpp backend of the process (llama.cpp refuses a second one while the
//! first is alive), with llama.cpp's own log routed into `tracing`.

use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;

static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();

/// The process-wide backend, initialised on first use.
pub fn backend() -> &'static LlamaBackend {
    BACKEND.get_or_init(|| {
        // llama.cpp logs through tracing under the `llama_cpp_2` target: quiet unless
        // RUST_LOG asks for it.
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
        LlamaBackend::init().expect("llama.cpp backend initialises once per process")
    })
}
