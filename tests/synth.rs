//! Synthetic GGUF models run by real llama.cpp: rehearsal models replay their script
//! exactly under greedy decoding in every dtype and for any prompt, random models
//! decode with finite logits, and llama.cpp agrees with our header reader.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use orchestra::synth::{self, LlamaSpec, TensorType};

const DTYPES: [TensorType; 3] = [TensorType::F32, TensorType::F16, TensorType::Q8_0];

/// A greedy pick must win by this many logits, so no kernel or batch-size difference
/// can flip it.
const MIN_MARGIN: f32 = 5.0;

fn chatml(user: &str) -> String {
    format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

/// llama.cpp allows one backend per process: every test shares this one.
fn backend() -> &'static LlamaBackend {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        // llama.cpp's chatter goes to tracing, which prints nothing unless RUST_LOG asks.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
        LlamaBackend::init().expect("llama.cpp backend initialises once per process")
    })
}

fn load(path: &Path) -> LlamaModel {
    LlamaModel::load_from_file(backend(), path, &LlamaModelParams::default())
        .unwrap_or_else(|e| panic!("llama.cpp loads `{}`: {e}", path.display()))
}

/// What greedy decoding produced.
#[derive(Debug)]
struct Generation {
    text: String,
    /// Whether an end-of-generation token stopped it.
    ended: bool,
    tokens: usize,
    /// The smallest gap between the best and second-best logit over all steps.
    min_margin: f32,
    /// Whether every logit of every step was finite.
    finite: bool,
}

/// Greedy decoding with llama.cpp: the prompt goes in chunks of `n_batch` (a larger
/// batch aborts the process), then one token at a time. With `stop_at_eog` false it
/// runs all `max_tokens` steps.
fn generate(
    model: &LlamaModel,
    prompt: &str,
    max_tokens: usize,
    n_batch: u32,
    stop_at_eog: bool,
) -> Generation {
    // One thread: test models are tiny, and tests run in parallel; llama.cpp's
    // spinning thread barrier crawls when threads outnumber cores.
    generate_with_threads(model, prompt, max_tokens, n_batch, stop_at_eog, 1)
}

fn generate_with_threads(
    model: &LlamaModel,
    prompt: &str,
    max_tokens: usize,
    n_batch: u32,
    stop_at_eog: bool,
    threads: i32,
) -> Generation {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(1024))
        .with_n_batch(n_batch)
        .with_n_ubatch(n_batch)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model
        .new_context(backend(), params)
        .expect("llama.cpp creates a context");
    let vocab = model.vocab();
    let prompt_tokens = vocab.tokenize(prompt.as_bytes(), true, true);
    assert!(!prompt_tokens.is_empty(), "prompt `{prompt}` tokenizes");

    let mut batch = LlamaBatch::new(n_batch as usize, 1);
    let mut pos = 0usize;
    for chunk in prompt_tokens.chunks(n_batch as usize) {
        batch.clear();
        for &t in chunk {
            let last = pos + 1 == prompt_tokens.len();
            batch.add(t, pos as i32, &[0], last).unwrap();
            pos += 1;
        }
        ctx.decode(&mut batch).expect("prompt decodes");
    }

    let mut sampler = LlamaSampler::greedy();
    let mut bytes = Vec::new();
    let mut out = Generation {
        text: String::new(),
        ended: false,
        tokens: 0,
        min_margin: f32::INFINITY,
        finite: true,
    };
    for _ in 0..max_tokens {
        let idx = batch.n_tokens() - 1;
        let logits = ctx.get_logits_ith(idx);
        out.finite &= logits.iter().all(|x| x.is_finite());
        let (mut best, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for &x in logits {
            if x > best {
                second = best;
                best = x;
            } else if x > second {
                second = x;
            }
        }
        out.min_margin = out.min_margin.min(best - second);
        // `sample` already accepts the token into the sampler: no `accept` after it.
        let token = sampler.sample(&ctx, idx);
        out.tokens += 1;
        if stop_at_eog && vocab.is_eog(token) {
            out.ended = true;
            break;
        }
        bytes.extend(vocab.token_to_piece(token, false, None));
        batch.clear();
        batch.add(token, pos as i32, &[0], true).unwrap();
        pos += 1;
        ctx.decode(&mut batch).expect("generated token decodes");
    }
    // Lossy: a random model may stop mid-character; replays are compared whole anyway.
    out.text = String::from_utf8_lossy(&bytes).into_owned();
    out
}

fn assert_replays(path: &Path, script: &str, what: &str) {
    let model = load(path);
    let out = generate(&model, &chatml("Play me something."), 1000, 512, true);
    assert_eq!(out.text, script, "{what}: replayed text");
    assert!(out.ended, "{what}: ends with end-of-generation");
    assert!(
        out.min_margin > MIN_MARGIN,
        "{what}: greedy margin {} is too thin",
        out.min_margin
    );
}

const SCRIPTS: &[(&str, &str)] = &[
    ("plain", "Hello there, the band is tuning up."),
    (
        "repeats",
        "the cat and the dog and the bird, and the cat again and again and again.",
    ),
    (
        "code",
        "fn main() {\n    let x = vec![1, 2, 3];\n    println!(\"{:?}\", x);\n}",
    ),
    ("unicode", "Café au lait ☕ — naïve jazz, 東京 nights 🎷!"),
    (
        "spaces",
        "  two leading spaces, a\ttab, and trailing space ",
    ),
];

#[test]
fn rehearsal_models_replay_their_script_in_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    for &(name, script) in SCRIPTS {
        for dtype in DTYPES {
            let path = dir.path().join(format!("{name}-{dtype}.gguf"));
            let info = synth::write_rehearsal_model(name, script, &path, dtype).unwrap();
            assert_eq!(info.text, script);
            assert_replays(&path, script, &format!("{name} in {dtype}"));
        }
    }
}

#[test]
fn long_and_repetitive_scripts_replay() {
    let dir = tempfile::tempdir().unwrap();
    // 300 distinct pieces widen the model to n_embd 320 (10 heads of 32).
    let long: Vec<String> = (0..300).map(|i| format!("bar{i}")).collect();
    let long = long.join(" ");
    let chant = "la ".repeat(60) + "da capo";
    for (name, script) in [("long", long.as_str()), ("chant", chant.as_str())] {
        for dtype in [TensorType::F16, TensorType::Q8_0] {
            let path = dir.path().join(format!("{name}-{dtype}.gguf"));
            let info = synth::write_rehearsal_model(name, script, &path, dtype).unwrap();
            if name == "long" {
                assert_eq!(info.n_embd, 320);
            }
            assert_replays(&path, script, &format!("{name} in {dtype}"));
        }
    }
}

#[test]
fn rehearsal_band_members_replay_their_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let paths = synth::write_rehearsal_band(dir.path()).unwrap();
    let band = synth::rehearsal_band();
    assert_eq!(paths.len(), band.len());
    for (member, path) in band.iter().zip(&paths) {
        let model = load(path);
        assert_eq!(model.meta_val_str("general.name").unwrap(), member.name);
        drop(model);
        assert_replays(path, member.script, member.name);
    }
}

#[test]
fn replay_ignores_the_prompt_and_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let script = "Moonlight hums a slow blue tune, and the whole city sways along.";
    let path = dir.path().join("ella.gguf");
    synth::write_rehearsal_model("ella", script, &path, TensorType::Q8_0).unwrap();
    let model = load(&path);
    let long_user = "tell me about the band and the music ".repeat(40);
    let prompts = [
        chatml("write a poem"),
        chatml(&long_user),
        format!(
            "<|im_start|>system\nYou are terse.<|im_end|>\n{}",
            chatml("hi")
        ),
        "Hello".to_string(),
        String::new(),
    ];
    for prompt in &prompts {
        for n_batch in [512, 32, 7] {
            let out = generate(&model, prompt, 200, n_batch, true);
            assert_eq!(out.text, script, "prompt {prompt:?}, n_batch {n_batch}");
            assert!(out.ended);
            assert!(out.min_margin > MIN_MARGIN, "margin {}", out.min_margin);
        }
    }
}

#[test]
fn chatml_prompts_end_in_a_token_no_script_uses() {
    // The replay contract: the prompt's last token is not a script piece. For ChatML
    // that token is the newline byte token.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("code.gguf");
    let (_, script) = SCRIPTS[2];
    synth::write_rehearsal_model("code", script, &path, TensorType::F16).unwrap();
    let model = load(&path);
    let vocab = model.vocab();
    let tokens = vocab.tokenize(chatml("hi").as_bytes(), true, true);
    let last = *tokens.last().unwrap();
    assert_eq!(vocab.token_to_piece(last, false, None), b"\n");
    assert_eq!(last, vocab.nl());
    // And the base vocabulary's word pieces merge as SentencePiece pieces should.
    let the = vocab.tokenize(b"the", false, false);
    assert_eq!(the.len(), 1, "`the` is one piece");
    assert_eq!(vocab.token_to_piece(the[0], false, None), b" the");
}

#[test]
fn random_models_decode_with_finite_logits_in_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in DTYPES {
        let spec = LlamaSpec {
            dtype,
            ..synth::tiny_spec()
        };
        let path = dir.path().join(format!("tiny-{dtype}.gguf"));
        synth::write_model(&spec, &path).unwrap();
        let model = load(&path);
        let out = generate(&model, &chatml("babble"), 20, 512, false);
        assert_eq!(out.tokens, 20, "{dtype}");
        assert!(out.finite, "{dtype}: logits are finite");
    }
}

#[test]
fn llama_cpp_agrees_with_the_header_reader() {
    let dir = tempfile::tempdir().unwrap();
    let spec = LlamaSpec {
        n_vocab: 2000,
        dtype: TensorType::Q8_0,
        ..synth::tiny_spec()
    };
    let path = dir.path().join("tiny.gguf");
    synth::write_model(&spec, &path).unwrap();
    let header = orchestra::gguf::read_header(&path).unwrap();
    let model = load(&path);
    assert_eq!(model.n_vocab() as u64, header.vocab_size().unwrap());
    assert_eq!(model.n_vocab(), 2000);
    assert_eq!(model.n_embd() as u64, header.embedding_length().unwrap());
    assert_eq!(u64::from(model.n_layer()), header.layer_count().unwrap());
    assert_eq!(u64::from(model.n_head()), header.head_count().unwrap());
    assert_eq!(
        u64::from(model.n_head_kv()),
        header.head_count_kv().unwrap()
    );
    assert_eq!(
        u64::from(model.n_ctx_train()),
        header.context_length().unwrap()
    );
    assert_eq!(model.n_params(), header.parameter_count());
    assert_eq!(model.meta_val_str("general.name").unwrap(), "tiny");
    assert_eq!(header.dominant_type_name().as_deref(), Some("Q8_0"));

    let vocab = model.vocab();
    assert!(vocab.is_eog(vocab.eos()));
    assert_eq!(vocab.bos().0, synth::Vocab::BOS as i32);
    assert_eq!(vocab.eot().0, synth::Vocab::IM_END as i32);
    assert!(vocab.is_eog(vocab.eot()));

    let template = model
        .chat_template(None)
        .expect("the model has a chat template");
    assert!(template.to_str().unwrap().contains("<|im_start|>"));
    let messages = [LlamaChatMessage::new("user".into(), "hi".into()).unwrap()];
    let prompt = model
        .apply_chat_template(&template, &messages, true)
        .expect("llama.cpp recognises the template as chatml");
    assert_eq!(prompt, chatml("hi"));
}

/// Writes and runs the ~150M-parameter benchmark model (170 MB, about a second);
/// prints timings with `--nocapture`.
#[test]
fn bench_model_is_written_quickly_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.gguf");
    let started = Instant::now();
    let bytes = synth::write_model(&synth::bench_spec(), &path).unwrap();
    let written = started.elapsed();
    let header = orchestra::gguf::read_header(&path).unwrap();
    println!(
        "bench model: {:.1} M parameters, {:.1} MB, written in {:.2} s",
        header.parameter_count() as f64 / 1e6,
        bytes as f64 / 1e6,
        written.as_secs_f64()
    );
    let started = Instant::now();
    let model = load(&path);
    println!("loaded in {:.2} s", started.elapsed().as_secs_f64());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as i32);
    let started = Instant::now();
    let out = generate_with_threads(
        &model,
        &chatml("Tell me a long story."),
        32,
        512,
        false,
        threads,
    );
    let secs = started.elapsed().as_secs_f64();
    println!(
        "decoded {} tokens in {secs:.2} s ({:.1} tokens/s)",
        out.tokens,
        out.tokens as f64 / secs
    );
    assert!(out.finite);
    assert_eq!(model.n_params(), header.parameter_count());
    assert!((140e6..180e6).contains(&(header.parameter_count() as f64)));
}
