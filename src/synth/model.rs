//! Llama-architecture models: the spec (shapes, dtype, seed), the tensor layout and
//! metadata llama.cpp expects, and the weights — random, or a replay chain that makes
//! greedy decoding recite a fixed text. Never loads or runs a model.

use std::path::Path;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::error::SynthError;
use super::gguf::{GgufWriter, TensorType};
use super::vocab::Vocab;

/// A ChatML template: llama.cpp recognises it as `chatml` by `<|im_start|>`, so
/// `apply_chat_template` works without a Jinja engine.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Standard deviation of random weights: small enough that activations and logits
/// stay finite through any depth, as in GPT-2's initialisation.
const RANDOM_STD: f32 = 0.02;

/// Replay output weights: how strongly the first piece answers the shared component,
/// and how strongly each successor answers its predecessor's own component. See
/// [`Weights::Replay`] for the resulting margins.
const REPLAY_START_GAIN: f32 = 1.0;
const REPLAY_NEXT_GAIN: f32 = 4.0;

/// Shapes and settings of a llama model. The vocabulary size comes from the
/// [`Vocab`] it is written with.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaSpec {
    /// `general.name`.
    pub name: String,
    /// Vocabulary size to reach: the vocabulary is padded with filler pieces up to
    /// this many tokens (0, or fewer than it has, keeps it as given).
    pub n_vocab: u32,
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_head: u32,
    /// Fewer than `n_head` means grouped-query attention.
    pub n_head_kv: u32,
    pub n_ff: u32,
    /// `llama.context_length`.
    pub n_ctx_train: u32,
    pub rms_eps: f32,
    pub rope_freq_base: f32,
    /// Type of the matrices; norm weights are always f32.
    pub dtype: TensorType,
    /// Seeds every random tensor: same spec, same bytes.
    pub seed: u64,
    /// `tokenizer.chat_template`; `None` writes no template.
    pub chat_template: Option<String>,
}

impl LlamaSpec {
    /// A spec with the usual defaults (ChatML template, eps 1e-5, rope base 10000).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: impl Into<String>,
        n_embd: u32,
        n_layer: u32,
        n_head: u32,
        n_head_kv: u32,
        n_ff: u32,
        dtype: TensorType,
    ) -> LlamaSpec {
        LlamaSpec {
            name: name.into(),
            n_vocab: 0,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            n_ff,
            n_ctx_train: 2048,
            rms_eps: 1e-5,
            rope_freq_base: 10_000.0,
            dtype,
            seed: 0,
            chat_template: Some(CHATML_TEMPLATE.to_owned()),
        }
    }

    pub fn head_dim(&self) -> u32 {
        self.n_embd / self.n_head.max(1)
    }

    /// Width of the K and V projections.
    pub fn n_embd_kv(&self) -> u32 {
        self.head_dim() * self.n_head_kv
    }

    /// Parameters of the model with a vocabulary of `n_vocab` tokens.
    pub fn parameter_count(&self, n_vocab: u64) -> u64 {
        let (e, kv, ff) = (
            u64::from(self.n_embd),
            u64::from(self.n_embd_kv()),
            u64::from(self.n_ff),
        );
        let per_layer = 2 * e + 2 * e * e + 2 * e * kv + 3 * e * ff;
        2 * n_vocab * e + e + u64::from(self.n_layer) * per_layer
    }

    /// Checks the shapes are ones llama.cpp can build a graph for.
    pub fn validate(&self, n_vocab: usize) -> Result<(), SynthError> {
        let bad = |reason: String| {
            Err(SynthError::BadSpec {
                name: self.name.clone(),
                reason,
            })
        };
        let block = self.dtype.block_size() as u32;
        if self.n_layer == 0 || self.n_head == 0 || self.n_head_kv == 0 || self.n_ctx_train == 0 {
            return bad(
                "`n_layer`, `n_head`, `n_head_kv` and `n_ctx_train` must be at least 1".into(),
            );
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "`n_embd` {} is not a multiple of `n_head` {}",
                self.n_embd, self.n_head
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head size {} is odd; rope needs an even head size",
                self.head_dim()
            ));
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad(format!(
                "`n_head` {} is not a multiple of `n_head_kv` {}",
                self.n_head, self.n_head_kv
            ));
        }
        for (what, n) in [("n_embd", self.n_embd), ("n_ff", self.n_ff)] {
            if n == 0 || !n.is_multiple_of(block) {
                return bad(format!(
                    "`{what}` {n} is not a positive multiple of {block}, the {} block size",
                    self.dtype
                ));
            }
        }
        if n_vocab == 0 || n_vocab > i32::MAX as usize {
            return bad(format!("the vocabulary has {n_vocab} tokens"));
        }
        Ok(())
    }
}

/// A small random model for tests: about 170 K parameters with the base vocabulary
/// (about 0.7 MB in f32), grouped-query attention, loads in milliseconds.
pub fn tiny_spec() -> LlamaSpec {
    LlamaSpec {
        n_ctx_train: 512,
        seed: 7,
        ..LlamaSpec::new("tiny", 64, 2, 2, 1, 128, TensorType::F32)
    }
}

/// The benchmark model: llama shapes of about 160 M parameters (GPT-2-small widths,
/// 32000 tokens), q8_0, about 170 MB.
pub fn bench_spec() -> LlamaSpec {
    LlamaSpec {
        n_vocab: 32_000,
        seed: 150,
        ..LlamaSpec::new("bench-150m", 768, 12, 12, 12, 3072, TensorType::Q8_0)
    }
}

/// What the weights encode.
#[derive(Debug, Clone, PartialEq)]
pub enum Weights {
    /// Small uniform noise: a model that runs and babbles.
    Random,
    /// A model whose greedy output is fixed: every attention and FFN block adds zero
    /// (`attn_output` and `ffn_down` are zero), so the final hidden state is the
    /// rms-normed embedding of the last token alone. Embeddings share a constant
    /// component (dim 0); chain token `k` also has a one-hot dim `k + 1`. The output row
    /// of the first chain token reads dim 0, the row of chain token `k + 1` (and of
    /// `end` after the last) reads dim `k + 1` four times as strongly. After any
    /// non-chain token the first piece wins by `sqrt(n_embd)` ≥ 8 logits; after chain
    /// token `k` its successor wins by `3 * sqrt(n_embd / 2)` ≥ 16 — far beyond what
    /// f16, q8_0 or batch-size-dependent kernels can move.
    Replay(ReplayChain),
}

/// Token ids greedy decoding replays, then the end-of-generation token.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayChain {
    pub tokens: Vec<u32>,
    pub end: u32,
}

impl ReplayChain {
    fn validate(&self, spec: &LlamaSpec, n_vocab: usize) -> Result<(), SynthError> {
        let bad = |reason: String| {
            Err(SynthError::BadSpec {
                name: spec.name.clone(),
                reason,
            })
        };
        if self.tokens.is_empty() {
            return bad("the replay chain is empty".into());
        }
        if self.tokens.len() + 1 > spec.n_embd as usize {
            return bad(format!(
                "a replay chain of {} tokens needs `n_embd` of at least {}",
                self.tokens.len(),
                self.tokens.len() + 1
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for &t in self.tokens.iter().chain([&self.end]) {
            if t as usize >= n_vocab {
                return bad(format!(
                    "replay token {t} is outside the vocabulary of {n_vocab}"
                ));
            }
            if !seen.insert(t) {
                return bad(format!(
                    "replay token {t} appears twice; a bigram chain needs distinct tokens"
                ));
            }
        }
        Ok(())
    }
}

/// A writer holding the model's metadata and tensor generators, ready to `write`;
/// callers may `set` extra keys first. The vocabulary is padded to `spec.n_vocab`.
pub fn model_writer(
    spec: &LlamaSpec,
    vocab: &Vocab,
    weights: &Weights,
) -> Result<GgufWriter<'static>, SynthError> {
    let padded;
    let vocab = if (spec.n_vocab as usize) > vocab.len() {
        let mut v = vocab.clone();
        v.pad_to(spec.n_vocab as usize);
        padded = v;
        &padded
    } else {
        vocab
    };
    let n_vocab = vocab.len();
    spec.validate(n_vocab)?;
    if let Weights::Replay(chain) = weights {
        chain.validate(spec, n_vocab)?;
    }

    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama");
    w.set("general.name", spec.name.as_str());
    w.set("general.file_type", spec.dtype.file_type());
    w.set("general.quantization_version", 2u32);
    w.set("llama.context_length", spec.n_ctx_train);
    w.set("llama.embedding_length", spec.n_embd);
    w.set("llama.block_count", spec.n_layer);
    w.set("llama.feed_forward_length", spec.n_ff);
    w.set("llama.attention.head_count", spec.n_head);
    w.set("llama.attention.head_count_kv", spec.n_head_kv);
    w.set("llama.rope.dimension_count", spec.head_dim());
    w.set("llama.rope.freq_base", spec.rope_freq_base);
    w.set("llama.attention.layer_norm_rms_epsilon", spec.rms_eps);
    w.set("llama.vocab_size", n_vocab as u32);
    vocab.write_metadata(&mut w);
    if let Some(template) = &spec.chat_template {
        w.set("tokenizer.chat_template", template.as_str());
    }

    let (e, kv, ff, nv) = (
        u64::from(spec.n_embd),
        u64::from(spec.n_embd_kv()),
        u64::from(spec.n_ff),
        n_vocab as u64,
    );
    let dt = spec.dtype;
    let seed = spec.seed;

    match weights {
        Weights::Random => {
            w.add_tensor(
                "token_embd.weight",
                &[e, nv],
                dt,
                random_fill(seed, "token_embd"),
            )?;
        }
        Weights::Replay(chain) => {
            // position_of[token] = index in the chain, for the one-hot component.
            let mut position_of = vec![None; n_vocab];
            for (k, &t) in chain.tokens.iter().enumerate() {
                position_of[t as usize] = Some(k);
            }
            w.add_tensor("token_embd.weight", &[e, nv], dt, move |r, row| {
                row[0] = 1.0;
                if let Some(k) = position_of[r as usize] {
                    row[k + 1] = 1.0;
                }
            })?;
        }
    }

    for layer in 0..spec.n_layer {
        let name = |t: &str| format!("blk.{layer}.{t}.weight");
        let zero_out = matches!(weights, Weights::Replay(_));
        w.add_tensor(name("attn_norm"), &[e], TensorType::F32, ones)?;
        for (t, dims) in [("attn_q", [e, e]), ("attn_k", [e, kv]), ("attn_v", [e, kv])] {
            w.add_tensor(name(t), &dims, dt, random_fill(seed, &name(t)))?;
        }
        if zero_out {
            w.add_tensor(name("attn_output"), &[e, e], dt, zeros)?;
        } else {
            let t = name("attn_output");
            w.add_tensor(&t, &[e, e], dt, random_fill(seed, &t))?;
        }
        w.add_tensor(name("ffn_norm"), &[e], TensorType::F32, ones)?;
        for t in ["ffn_gate", "ffn_up"] {
            w.add_tensor(name(t), &[e, ff], dt, random_fill(seed, &name(t)))?;
        }
        if zero_out {
            w.add_tensor(name("ffn_down"), &[ff, e], dt, zeros)?;
        } else {
            let t = name("ffn_down");
            w.add_tensor(&t, &[ff, e], dt, random_fill(seed, &t))?;
        }
    }

    w.add_tensor("output_norm.weight", &[e], TensorType::F32, ones)?;
    match weights {
        Weights::Random => {
            w.add_tensor("output.weight", &[e, nv], dt, random_fill(seed, "output"))?;
        }
        Weights::Replay(chain) => {
            let first = chain.tokens[0] as usize;
            // reads_dim[token] = the embedding dim whose presence makes `token` next.
            let mut reads_dim = vec![None; n_vocab];
            for (k, &t) in chain.tokens.iter().enumerate().skip(1) {
                reads_dim[t as usize] = Some(k);
            }
            reads_dim[chain.end as usize] = Some(chain.tokens.len());
            w.add_tensor("output.weight", &[e, nv], dt, move |r, row| {
                if r as usize == first {
                    row[0] = REPLAY_START_GAIN;
                }
                if let Some(d) = reads_dim[r as usize] {
                    row[d] = REPLAY_NEXT_GAIN;
                }
            })?;
        }
    }
    Ok(w)
}

/// Writes a random-weights llama model with the base vocabulary (padded to
/// `spec.n_vocab`) to `path`, through a temporary file renamed into place; returns
/// the file size.
pub fn write_model(spec: &LlamaSpec, path: impl AsRef<Path>) -> Result<u64, SynthError> {
    write_model_with(spec, &Vocab::new(), &Weights::Random, path)
}

/// [`write_model`] with a chosen vocabulary and weights.
pub fn write_model_with(
    spec: &LlamaSpec,
    vocab: &Vocab,
    weights: &Weights,
    path: impl AsRef<Path>,
) -> Result<u64, SynthError> {
    Ok(model_writer(spec, vocab, weights)?.write(path)?)
}

fn ones(_: u64, row: &mut [f32]) {
    row.fill(1.0);
}

fn zeros(_: u64, _: &mut [f32]) {}

/// FNV-1a, to give every tensor its own stream from one seed: a tensor's values do
/// not depend on which tensors come before it.
pub(crate) fn hash_str(seed: u64, s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Uniform noise with standard deviation [`RANDOM_STD`]; rows are drawn in order from
/// one ChaCha8 stream per tensor (uniform, not gaussian: half the cost, and the shape
/// of the noise does not matter here).
fn random_fill(seed: u64, tensor: &str) -> impl FnMut(u64, &mut [f32]) + 'static {
    let mut rng = ChaCha8Rng::seed_from_u64(hash_str(seed, tensor));
    let half_width = RANDOM_STD * 3f32.sqrt();
    // 24 random bits map to [-1, 1) exactly in f32.
    let scale = 2.0 * half_width / (1u32 << 24) as f32;
    move |_, row| {
        let mut pairs = row.chunks_exact_mut(2);
        for pair in &mut pairs {
            let bits = rng.next_u64();
            pair[0] = ((bits >> 40) as u32) as f32 * scale - half_width;
            pair[1] = (((bits >> 8) as u32) & 0x00ff_ffff) as f32 * scale - half_width;
        }
        for x in pairs.into_remainder() {
            *x = (rng.next_u32() >> 8) as f32 * scale - half_width;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::read_header;

    #[test]
    fn tiny_model_has_llama_layout_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        let spec = tiny_spec();
        let vocab = Vocab::new();
        let size = write_model(&spec, &path).unwrap();
        let h = read_header(&path).unwrap();
        assert_eq!(h.file_size, size);
        assert!(size > 100_000 && size < 1_000_000, "{size}");
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.name(), Some("tiny"));
        assert_eq!(h.context_length(), Some(512));
        assert_eq!(h.layer_count(), Some(2));
        assert_eq!(h.embedding_length(), Some(64));
        assert_eq!(h.head_count(), Some(2));
        assert_eq!(h.head_count_kv(), Some(1));
        assert_eq!(h.feed_forward_length(), Some(128));
        assert_eq!(h.get_u64("llama.rope.dimension_count"), Some(32));
        assert_eq!(h.get_u64("general.file_type"), Some(0));
        assert_eq!(h.get_str("tokenizer.ggml.model"), Some("llama"));
        assert_eq!(h.vocab_size(), Some(vocab.len() as u64));
        assert!(h.chat_template().unwrap().contains("<|im_start|>"));
        assert_eq!(
            h.parameter_count(),
            spec.parameter_count(vocab.len() as u64)
        );
        assert_eq!(
            h.tensor("token_embd.weight").unwrap().dims,
            [64, vocab.len() as u64]
        );
        assert_eq!(h.tensor("blk.1.attn_k.weight").unwrap().dims, [64, 32]);
        assert_eq!(h.tensor("blk.0.ffn_down.weight").unwrap().dims, [128, 64]);
        assert_eq!(h.tensor("blk.0.ffn_up.weight").unwrap().dims, [64, 128]);
        assert_eq!(h.tensors.len(), 3 + 2 * 9);
    }

    #[test]
    fn same_seed_writes_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a.gguf"),
            dir.path().join("b.gguf"),
            dir.path().join("c.gguf"),
        );
        let spec = LlamaSpec {
            dtype: TensorType::Q8_0,
            ..tiny_spec()
        };
        write_model(&spec, &a).unwrap();
        write_model(&spec, &b).unwrap();
        let other = LlamaSpec { seed: 8, ..spec };
        write_model(&other, &c).unwrap();
        let (a, b, c) = (
            std::fs::read(a).unwrap(),
            std::fs::read(b).unwrap(),
            std::fs::read(c).unwrap(),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn norms_stay_f32_in_quantised_models() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q8.gguf");
        let spec = LlamaSpec {
            dtype: TensorType::Q8_0,
            ..tiny_spec()
        };
        write_model(&spec, &path).unwrap();
        let h = read_header(&path).unwrap();
        assert_eq!(h.get_u64("general.file_type"), Some(7));
        assert_eq!(h.dominant_type_name().as_deref(), Some("Q8_0"));
        for t in &h.tensors {
            let norm = t.name.contains("norm");
            assert_eq!(t.ty.name() == "F32", norm, "{}", t.name);
        }
    }

    #[test]
    fn vocabulary_is_padded_to_the_spec_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pad.gguf");
        let spec = LlamaSpec {
            n_vocab: 3000,
            ..tiny_spec()
        };
        write_model(&spec, &path).unwrap();
        let h = read_header(&path).unwrap();
        assert_eq!(h.vocab_size(), Some(3000));
        assert_eq!(h.get_u64("llama.vocab_size"), Some(3000));
        assert_eq!(h.tensor("output.weight").unwrap().dims, [64, 3000]);
    }

    #[test]
    fn bench_spec_is_about_150m_parameters() {
        let spec = bench_spec();
        let n = spec.parameter_count(u64::from(spec.n_vocab));
        assert!((140_000_000..170_000_000).contains(&n), "{n}");
    }

    #[test]
    fn random_weights_are_small_and_centred() {
        let mut fill = random_fill(1, "x");
        let mut row = vec![0.0f32; 10_001];
        fill(0, &mut row);
        let mean = row.iter().sum::<f32>() / row.len() as f32;
        let var = row.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / row.len() as f32;
        assert!(mean.abs() < 0.002, "{mean}");
        assert!((var.sqrt() - RANDOM_STD).abs() < 0.002, "{}", var.sqrt());
        let bound = RANDOM_STD * 3f32.sqrt();
        assert!(row.iter().all(|x| x.abs() <= bound));
    }

    #[test]
    fn invalid_specs_are_refused_with_the_reason() {
        let vocab = Vocab::new();
        let cases = [
            (
                LlamaSpec {
                    n_head: 3,
                    ..tiny_spec()
                },
                "not a multiple of `n_head`",
            ),
            (
                LlamaSpec {
                    n_head_kv: 3,
                    n_head: 4,
                    ..tiny_spec()
                },
                "`n_head_kv`",
            ),
            (
                LlamaSpec {
                    n_ff: 100,
                    dtype: TensorType::Q8_0,
                    ..tiny_spec()
                },
                "`n_ff` 100",
            ),
            (
                LlamaSpec {
                    n_layer: 0,
                    ..tiny_spec()
                },
                "at least 1",
            ),
        ];
        for (spec, needle) in cases {
            let err = model_writer(&spec, &vocab, &Weights::Random).err().unwrap();
            assert!(err.to_string().contains(needle), "{err}");
        }
        let chain = Weights::Replay(ReplayChain {
            tokens: vec![300, 301, 300],
            end: 4,
        });
        let err = model_writer(&tiny_spec(), &vocab, &chain).err().unwrap();
        assert!(err.to_string().contains("appears twice"), "{err}");
    }
}
