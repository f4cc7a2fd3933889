//! Checks a GGUF header against what llama.cpp needs to load it, before llama.cpp sees
//! the file. llama.cpp turns most bad files into an error, but some it meets with a
//! `GGML_ASSERT` (duplicate token strings, out-of-range layer and expert counts, an
//! unknown RoPE scaling type) or a C++ exception outside any `try` (a SentencePiece
//! vocabulary missing byte tokens, at the first prompt that needs one): either ends the
//! whole process. Each check here names the llama.cpp code it mirrors (the copy
//! vendored by llama-cpp-sys-2 0.1.161). Reads the file only to re-read token strings
//! byte-exact.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};

use super::error::GgufError;
use super::read::{GgufHeader, read_header};
use super::types::{MetaArray, MetaValue, align_up, value_type};

/// `GGML_MAX_NAME`: tensor names are stored in a 64-byte field, NUL included.
const MAX_TENSOR_NAME: usize = 64;
/// `LLAMA_MAX_LAYERS`.
const MAX_LAYERS: u64 = 512;
/// `LLAMA_MAX_EXPERTS`.
const MAX_EXPERTS: u64 = 1024;
/// `LLAMA_ROPE_SCALING_TYPES`.
const ROPE_SCALING_TYPES: &[&str] = &["none", "linear", "yarn", "longrope"];

/// [`read_header`] then [`validate`]: the header of a file llama.cpp can load without
/// aborting on anything these checks know.
pub fn read_validated(path: impl AsRef<std::path::Path>) -> Result<GgufHeader, GgufError> {
    let header = read_header(path)?;
    validate(&header)?;
    Ok(header)
}

/// Checks everything in `header` that llama.cpp asserts on, or refuses, while loading
/// a model: the container (keys, tensor names, types, shapes, offsets, sizes), the
/// hyperparameters it asserts on, and the vocabulary (unique token strings, array
/// lengths, merges, byte tokens). Fails with [`GgufError::Damaged`] naming the file
/// and the first problem found.
pub fn validate(header: &GgufHeader) -> Result<(), GgufError> {
    let damaged = |reason: String| GgufError::Damaged {
        path: header.path.clone(),
        reason,
    };
    check_keys(header).map_err(damaged)?;
    check_tensors(header).map_err(damaged)?;
    check_hyperparameters(header).map_err(damaged)?;
    check_vocabulary(header)?;
    Ok(())
}

/// gguf.cpp `gguf_init_from_reader`: keys are non-empty and unique;
/// `general.alignment` is a u32. llama-model-loader: `general.architecture` is a string.
fn check_keys(h: &GgufHeader) -> Result<(), String> {
    let mut seen = HashSet::with_capacity(h.metadata.len());
    for (key, value) in &h.metadata {
        if key.is_empty() {
            return Err("a metadata key is empty".into());
        }
        if !seen.insert(key.as_str()) {
            return Err(format!("metadata key `{}` appears twice", escape(key)));
        }
        if key == "general.alignment" && !matches!(value, MetaValue::U32(_)) {
            return Err(format!(
                "`general.alignment` must be a u32, found {}",
                type_name(value)
            ));
        }
    }
    match h.get("general.architecture") {
        Some(MetaValue::Str(_)) => Ok(()),
        Some(other) => Err(format!(
            "`general.architecture` must be a string, found {}",
            type_name(other)
        )),
        None => Err("`general.architecture` is missing".into()),
    }
}

/// gguf.cpp: names shorter than `GGML_MAX_NAME` and unique, dims positive and their
/// product within `i64`, a type ggml knows, rows a whole number of blocks, and each
/// tensor at exactly the running sum of the padded sizes before it; llama-model-loader:
/// every tensor's data inside the file.
fn check_tensors(h: &GgufHeader) -> Result<(), String> {
    let mut names = HashSet::with_capacity(h.tensors.len());
    let mut expected_offset = 0u64;
    for t in &h.tensors {
        let name = escape(&t.name);
        if t.name.len() >= MAX_TENSOR_NAME {
            return Err(format!(
                "tensor name `{name}` is {} bytes long; ggml allows {}",
                t.name.len(),
                MAX_TENSOR_NAME - 1
            ));
        }
        if !names.insert(t.name.as_str()) {
            return Err(format!("tensor `{name}` appears twice"));
        }
        if t.dims.iter().any(|&d| d == 0 || d > i64::MAX as u64) {
            return Err(format!("tensor `{name}` has dims {:?}", t.dims));
        }
        if t.dims
            .iter()
            .try_fold(1i64, |acc, &d| acc.checked_mul(d as i64))
            .is_none()
        {
            return Err(format!(
                "tensor `{name}` has dims {:?}, more elements than ggml can count",
                t.dims
            ));
        }
        let (Some(block), Some(_)) = (t.ty.block_size(), t.ty.known_name()) else {
            return Err(format!(
                "tensor `{name}` has ggml type {}, which this llama.cpp does not know",
                t.ty.0
            ));
        };
        if !t.dims[0].is_multiple_of(block) {
            return Err(format!(
                "tensor `{name}` of type {} has rows of {} elements, not a multiple of its block size {block}",
                t.ty, t.dims[0]
            ));
        }
        let Some(bytes) = t.byte_size() else {
            return Err(format!(
                "tensor `{name}` has dims {:?}, too large for its type {}",
                t.dims, t.ty
            ));
        };
        if t.offset != expected_offset {
            return Err(format!(
                "tensor `{name}` starts at data offset {}, but the tensors before it end at {expected_offset}",
                t.offset
            ));
        }
        let end = h
            .data_offset
            .checked_add(t.offset)
            .and_then(|e| e.checked_add(bytes));
        if end.is_none_or(|end| end > h.file_size) {
            return Err(format!(
                "tensor `{name}` ends past the end of the file ({} bytes): the file is truncated",
                h.file_size
            ));
        }
        expected_offset = t
            .offset
            .checked_add(align_up(bytes, h.alignment))
            .ok_or_else(|| format!("tensor `{name}` ends past any file"))?;
    }
    Ok(())
}

/// llama-model.cpp `load_hparams`: the layer count, the NextN layers and the expert
/// counts it asserts on, and the RoPE scaling type it asserts is known; counts that
/// must fit llama.cpp's `int32_t` accessors; ggml's norm kernels: a non-negative
/// epsilon.
fn check_hyperparameters(h: &GgufHeader) -> Result<(), String> {
    let Some(arch) = h.architecture() else {
        return Ok(());
    };
    if h.tensors.is_empty() || arch == "clip" {
        // A vocabulary-only file (llama.cpp's `ggml-vocab-*.gguf`) or a vision
        // projector (llama.cpp refuses it as a model with an error): no hyperparameters.
        return Ok(());
    }
    let key = |suffix: &str| format!("{arch}.{suffix}");
    let uint = |suffix: &str| -> Result<Option<u64>, String> {
        match h.get(&key(suffix)) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                format!(
                    "`{}` must be a non-negative integer, found {v}",
                    key(suffix)
                )
            }),
        }
    };
    let layers =
        uint("block_count")?.ok_or_else(|| format!("`{}` is missing", key("block_count")))?;
    if layers == 0 || layers > MAX_LAYERS {
        return Err(format!(
            "`{}` is {layers}; llama.cpp allows 1 to {MAX_LAYERS}",
            key("block_count")
        ));
    }
    // llama.cpp hands these out as `int32_t` and llama-cpp-2 panics on a negative one.
    for suffix in [
        "context_length",
        "embedding_length",
        "feed_forward_length",
        "attention.head_count",
        "attention.head_count_kv",
    ] {
        let too_big = match h.get(&key(suffix)) {
            Some(MetaValue::Array(a)) => {
                integers(a).is_none_or(|v| v.iter().any(|&n| n > i32::MAX as u64))
            }
            Some(_) => uint(suffix)?.is_some_and(|n| n > i32::MAX as u64),
            None => false,
        };
        if too_big {
            return Err(format!(
                "`{}` is {}, beyond llama.cpp's 32-bit counts",
                key(suffix),
                h.get(&key(suffix))
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ));
        }
    }
    // ggml's norm kernels assert `eps >= 0.0f` at the first decode (a NaN fails too).
    for suffix in [
        "attention.layer_norm_rms_epsilon",
        "attention.layer_norm_epsilon",
    ] {
        if let Some(v) = h.get(&key(suffix)) {
            match v.as_f64() {
                Some(eps) if eps >= 0.0 && eps.is_finite() => {}
                _ => {
                    return Err(format!(
                        "`{}` is {v}; a norm epsilon must be a non-negative number",
                        key(suffix)
                    ));
                }
            }
        }
    }
    if let Some(nextn) = uint("nextn_predict_layers")?
        && nextn > layers
    {
        return Err(format!(
            "`{}` is {nextn}, more than the {layers} layers",
            key("nextn_predict_layers")
        ));
    }
    let experts = uint("expert_count")?.unwrap_or(0);
    if experts > MAX_EXPERTS {
        return Err(format!(
            "`{}` is {experts}; llama.cpp allows at most {MAX_EXPERTS}",
            key("expert_count")
        ));
    }
    // A scalar or one count per layer: llama.cpp checks the largest.
    let used = match h.get(&key("expert_used_count")) {
        None => 0,
        Some(MetaValue::Array(a)) => {
            if a.len() as u64 > layers {
                return Err(format!(
                    "`{}` has {} entries for {layers} layers",
                    key("expert_used_count"),
                    a.len()
                ));
            }
            integers(a)
                .ok_or_else(|| format!("`{}` must hold integers", key("expert_used_count")))?
                .into_iter()
                .max()
                .unwrap_or(0)
        }
        Some(_) => uint("expert_used_count")?.unwrap_or(0),
    };
    let groups = uint("expert_group_count")?.unwrap_or(0);
    let groups_used = uint("expert_group_used_count")?.unwrap_or(0);
    let expert_problem = if experts > 0 {
        if used == 0 || used > experts {
            Some(format!("uses {used} of {experts} experts per token"))
        } else if groups >= experts {
            Some(format!("has {groups} expert groups for {experts} experts"))
        } else if groups > 1
            && (!experts.is_multiple_of(groups) || groups_used == 0 || groups_used >= groups)
        {
            Some(format!(
                "has {experts} experts in {groups} groups, {groups_used} used"
            ))
        } else {
            None
        }
    } else if used != 0 || groups != 0 {
        Some(format!(
            "has no experts but uses {used} per token in {groups} groups"
        ))
    } else {
        None
    };
    if let Some(problem) = expert_problem {
        return Err(format!("the model {problem}"));
    }
    if let Some(v) = h.get(&key("rope.scaling.type")) {
        match v.as_str() {
            Some(s) if ROPE_SCALING_TYPES.contains(&s) => {}
            _ => {
                return Err(format!(
                    "`{}` is {v}; llama.cpp knows {}",
                    key("rope.scaling.type"),
                    ROPE_SCALING_TYPES.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// llama-vocab.cpp `llama_vocab::impl::load`: the token list, scores and types of the
/// right type and length, token strings unique as llama.cpp reads them (the
/// `GGML_ASSERT(id_to_token.size() == token_to_id.size())` abort), BPE merges present
/// and well-formed, and a SentencePiece vocabulary able to encode every byte of UTF-8
/// text (`byte_to_token` throws outside any `try` otherwise).
fn check_vocabulary(h: &GgufHeader) -> Result<(), GgufError> {
    let damaged = |reason: String| GgufError::Damaged {
        path: h.path.clone(),
        reason,
    };
    let model = match h.get("tokenizer.ggml.model") {
        None => return Ok(()),
        Some(MetaValue::Str(s)) => s.as_str(),
        Some(other) => {
            return Err(damaged(format!(
                "`tokenizer.ggml.model` must be a string, found {}",
                type_name(other)
            )));
        }
    };
    if matches!(model, "no_vocab" | "none") {
        return Ok(());
    }
    let n_tokens = match h.get("tokenizer.ggml.tokens") {
        Some(MetaValue::Array(MetaArray::Str(tokens))) => tokens.len(),
        Some(other) => {
            return Err(damaged(format!(
                "`tokenizer.ggml.tokens` must be an array of strings, found {}",
                type_name(other)
            )));
        }
        None => return Err(damaged("`tokenizer.ggml.tokens` is missing".into())),
    };
    if n_tokens == 0 || n_tokens > i32::MAX as usize {
        return Err(damaged(format!(
            "`tokenizer.ggml.tokens` holds {n_tokens} tokens"
        )));
    }
    for (key, allowed) in [
        (
            "tokenizer.ggml.scores",
            &[value_type::F32, value_type::I32][..],
        ),
        ("tokenizer.ggml.token_type", &[value_type::I32][..]),
    ] {
        let Some(value) = h.get(key) else { continue };
        let array = match value {
            MetaValue::Array(a) if allowed.contains(&a.elem_type_id()) => a,
            other => {
                return Err(damaged(format!(
                    "`{key}` has the wrong type ({})",
                    type_name(other)
                )));
            }
        };
        if array.len() < n_tokens {
            return Err(damaged(format!(
                "`{key}` has {} entries for {n_tokens} tokens",
                array.len()
            )));
        }
    }
    if matches!(model, "gpt2" | "hybriddna" | "whitespace" | "gemma4") {
        let kimi = h.get_str("tokenizer.ggml.pre") == Some("kimi-k2");
        match h.get("tokenizer.ggml.merges") {
            None if kimi && model != "gemma4" => {}
            None => {
                return Err(damaged(format!(
                    "the `{model}` tokenizer needs `tokenizer.ggml.merges`, which is missing"
                )));
            }
            Some(MetaValue::Array(MetaArray::Str(merges))) => {
                if let Some((i, m)) = merges
                    .iter()
                    .enumerate()
                    .find(|(_, m)| !well_formed_merge(m))
                {
                    return Err(damaged(format!(
                        "merge {i} is `{}`, not two pieces separated by a space",
                        escape(m)
                    )));
                }
            }
            Some(other) => {
                return Err(damaged(format!(
                    "`tokenizer.ggml.merges` must be an array of strings, found {}",
                    type_name(other)
                )));
            }
        }
    }
    let raw = raw_string_array(h, "tokenizer.ggml.tokens")?;
    let ids = unique_tokens(&raw).map_err(damaged)?;
    if model == "llama" {
        check_byte_tokens(&ids).map_err(damaged)?;
    }
    Ok(())
}

/// The token strings as llama.cpp keys them: up to the first NUL (it copies them
/// through a C string), an empty one renamed `[EMPTY_i]`. Fails on the first repeat.
fn unique_tokens(raw: &[Vec<u8>]) -> Result<HashMap<Cow<'_, [u8]>, usize>, String> {
    let mut ids: HashMap<Cow<[u8]>, usize> = HashMap::with_capacity(raw.len());
    for (i, bytes) in raw.iter().enumerate() {
        let text = match bytes.iter().position(|&b| b == 0) {
            Some(0) => Cow::Owned(format!("[EMPTY_{i}]").into_bytes()),
            Some(nul) => Cow::Borrowed(&bytes[..nul]),
            None if bytes.is_empty() => Cow::Owned(format!("[EMPTY_{i}]").into_bytes()),
            None => Cow::Borrowed(&bytes[..]),
        };
        if let Some(first) = ids.get(&text) {
            return Err(format!(
                "tokens {first} and {i} are both `{}`; token strings must be unique",
                escape(&String::from_utf8_lossy(&text))
            ));
        }
        ids.insert(text, i);
    }
    Ok(ids)
}

/// llama-vocab.cpp `byte_to_token` for SentencePiece: `<0xXX>`, else the byte itself,
/// else `std::out_of_range` thrown through the C API. Only bytes that occur in UTF-8
/// text matter (prompts are Rust strings).
fn check_byte_tokens(ids: &HashMap<Cow<'_, [u8]>, usize>) -> Result<(), String> {
    let utf8_bytes = (0u8..=0xF4).filter(|b| !matches!(b, 0xC0 | 0xC1));
    for b in utf8_bytes {
        let hex = format!("<0x{b:02X}>");
        let found = ids.contains_key(hex.as_bytes()) || (b != 0 && ids.contains_key(&[b][..]));
        if !found {
            return Err(format!(
                "its SentencePiece vocabulary has no token for byte 0x{b:02X} (`{hex}`), which llama.cpp needs to encode text containing it"
            ));
        }
    }
    Ok(())
}

/// A BPE merge as llama.cpp splits it: a space at index 1 or later with text after it.
fn well_formed_merge(merge: &str) -> bool {
    // Bytes, as llama.cpp's `word.find(' ', 1)`: index 1 may be inside a character.
    let bytes = merge.as_bytes();
    bytes
        .iter()
        .skip(1)
        .position(|&b| b == b' ')
        .is_some_and(|p| p + 2 < bytes.len())
}

/// The strings of the array under `key`, byte-exact, read again from the file.
fn raw_string_array(h: &GgufHeader, key: &str) -> Result<Vec<Vec<u8>>, GgufError> {
    let Some(index) = h.metadata.iter().position(|(k, _)| k == key) else {
        return Ok(Vec::new());
    };
    let io = |source: std::io::Error| GgufError::Read {
        path: h.path.clone(),
        source,
    };
    let changed = || GgufError::Malformed {
        path: h.path.clone(),
        reason: format!("`{key}` changed while it was read; read it again"),
    };
    let mut file = File::open(&h.path).map_err(io)?;
    file.seek(SeekFrom::Start(h.value_offsets[index]))
        .map_err(io)?;
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut word = [0u8; 8];
    let mut u32_at = |r: &mut BufReader<File>| -> Result<u32, GgufError> {
        r.read_exact(&mut word[..4]).map_err(io)?;
        Ok(u32::from_le_bytes(word[..4].try_into().expect("4 bytes")))
    };
    if u32_at(&mut r)? != value_type::ARRAY || u32_at(&mut r)? != value_type::STRING {
        return Err(changed());
    }
    let mut len = [0u8; 8];
    r.read_exact(&mut len).map_err(io)?;
    let n = u64::from_le_bytes(len);
    let expected = h
        .get(key)
        .and_then(MetaValue::as_array)
        .map_or(0, MetaArray::len);
    if n != expected as u64 {
        return Err(changed());
    }
    let mut out = Vec::with_capacity(expected);
    for _ in 0..n {
        r.read_exact(&mut len).map_err(io)?;
        let n = u64::from_le_bytes(len);
        if n > h.file_size {
            return Err(changed());
        }
        let mut s = vec![0u8; n as usize];
        r.read_exact(&mut s).map_err(io)?;
        out.push(s);
    }
    Ok(out)
}

fn integers(a: &MetaArray) -> Option<Vec<u64>> {
    let v: Vec<u64> = match a {
        MetaArray::U8(v) => v.iter().map(|&x| x.into()).collect(),
        MetaArray::U16(v) => v.iter().map(|&x| x.into()).collect(),
        MetaArray::U32(v) => v.iter().map(|&x| x.into()).collect(),
        MetaArray::U64(v) => v.clone(),
        MetaArray::I8(v) => v
            .iter()
            .map(|&x| u64::try_from(x).ok())
            .collect::<Option<_>>()?,
        MetaArray::I16(v) => v
            .iter()
            .map(|&x| u64::try_from(x).ok())
            .collect::<Option<_>>()?,
        MetaArray::I32(v) => v
            .iter()
            .map(|&x| u64::try_from(x).ok())
            .collect::<Option<_>>()?,
        MetaArray::I64(v) => v
            .iter()
            .map(|&x| u64::try_from(x).ok())
            .collect::<Option<_>>()?,
        _ => return None,
    };
    Some(v)
}

/// The GGUF type of a value, for messages: `u32`, `string`, `array of i32`.
fn type_name(value: &MetaValue) -> String {
    let name = match value {
        MetaValue::U8(_) => "u8",
        MetaValue::I8(_) => "i8",
        MetaValue::U16(_) => "u16",
        MetaValue::I16(_) => "i16",
        MetaValue::U32(_) => "u32",
        MetaValue::I32(_) => "i32",
        MetaValue::U64(_) => "u64",
        MetaValue::I64(_) => "i64",
        MetaValue::F32(_) => "f32",
        MetaValue::F64(_) => "f64",
        MetaValue::Bool(_) => "bool",
        MetaValue::Str(_) => "string",
        MetaValue::Array(a) => return format!("array of {}", a.type_name()),
    };
    name.into()
}

/// Text from the file for an error message: control characters escaped, long text cut.
fn escape(s: &str) -> String {
    let escaped: String = s.chars().flat_map(char::escape_debug).collect();
    if escaped.chars().count() > 60 {
        let head: String = escaped.chars().take(57).collect();
        format!("{head}…")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{GgufWriter, Vocab, Weights, model_writer, tiny_spec};
    use std::path::{Path, PathBuf};

    type TokenChange = Box<dyn FnOnce(&mut Vec<String>)>;
    type WriterChange = Box<dyn FnOnce(&mut GgufWriter<'static>)>;

    /// The tiny synthetic model's writer, for a test to damage before writing.
    fn tiny() -> GgufWriter<'static> {
        model_writer(&tiny_spec(), &Vocab::new(), &Weights::Random).unwrap()
    }

    fn tokens() -> Vec<String> {
        Vocab::new()
            .tokens()
            .iter()
            .map(|t| t.text.clone())
            .collect()
    }

    fn written(dir: &Path, w: GgufWriter<'_>) -> PathBuf {
        let path = dir.join("model.gguf");
        w.write(&path).unwrap();
        path
    }

    /// The reason `validate` gives for the file `change` makes, or `None` if it passes.
    fn reason(change: impl FnOnce(&mut GgufWriter<'static>)) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let mut w = tiny();
        change(&mut w);
        let path = written(dir.path(), w);
        match read_validated(&path) {
            Ok(_) => None,
            Err(GgufError::Damaged { reason, .. }) => Some(reason),
            Err(other) => panic!("not a validation error: {other}"),
        }
    }

    fn with_tokens(change: impl FnOnce(&mut Vec<String>)) -> impl FnOnce(&mut GgufWriter<'static>) {
        let mut t = tokens();
        change(&mut t);
        move |w: &mut GgufWriter<'static>| w.set("tokenizer.ggml.tokens", t)
    }

    fn position(token: &str) -> usize {
        tokens().iter().position(|t| t == token).unwrap()
    }

    #[test]
    fn synthetic_models_pass() {
        assert_eq!(reason(|_| {}), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ella.gguf");
        crate::synth::write_rehearsal_model(
            "ella",
            "Moonlight hums.",
            &path,
            crate::synth::TensorType::Q8_0,
        )
        .unwrap();
        read_validated(&path).unwrap();
    }

    #[test]
    fn token_strings_must_be_unique_as_llama_cpp_reads_them() {
        let (a, b) = (position("<0x41>"), position("<0x42>"));
        let cases: Vec<(&str, TokenChange, String)> = vec![
            (
                "equal strings",
                Box::new(move |t: &mut Vec<String>| t[b] = "<0x41>".into()),
                format!("tokens {a} and {b} are both `<0x41>`"),
            ),
            (
                // llama.cpp copies token strings through C strings: a NUL ends them.
                "equal up to a NUL",
                Box::new(move |t: &mut Vec<String>| t[b] = "<0x41>\0<0x42>".into()),
                format!("tokens {a} and {b} are both `<0x41>`"),
            ),
            (
                // An empty token is renamed `[EMPTY_i]`.
                "empty and its new name",
                Box::new(move |t: &mut Vec<String>| {
                    t[a] = String::new();
                    t[b] = format!("[EMPTY_{a}]");
                }),
                format!("tokens {a} and {b} are both `[EMPTY_{a}]`"),
            ),
        ];
        for (name, change, expected) in cases {
            let got = reason(with_tokens(change)).unwrap_or_default();
            assert!(got.starts_with(&expected), "{name}: {got}");
        }
        // Different strings stay different, even lossily decoded alike.
        assert_eq!(
            reason(with_tokens(move |t| t[b] = "<0x41>\u{1}".into())),
            None
        );
    }

    #[test]
    fn vocabulary_arrays_must_match_the_tokens() {
        let n = tokens().len();
        let short = reason(|w| w.set("tokenizer.ggml.scores", vec![0.0f32; 10])).unwrap();
        assert_eq!(
            short,
            format!("`tokenizer.ggml.scores` has 10 entries for {n} tokens")
        );
        let typed = reason(move |w| w.set("tokenizer.ggml.token_type", vec![1u32; n])).unwrap();
        assert_eq!(
            typed,
            "`tokenizer.ggml.token_type` has the wrong type (array of u32)"
        );
        let not_strings = reason(|w| w.set("tokenizer.ggml.tokens", vec![1i32, 2])).unwrap();
        assert!(not_strings.contains("array of strings"), "{not_strings}");
    }

    #[test]
    fn a_sentencepiece_vocabulary_must_encode_every_utf8_byte() {
        let at = position("<0x80>");
        let got = reason(with_tokens(move |t| t[at] = "<0x80>?".into())).unwrap();
        assert!(got.contains("no token for byte 0x80 (`<0x80>`)"), "{got}");
        // A byte never seen in UTF-8 text may be missing.
        let at = position("<0xFF>");
        assert_eq!(reason(with_tokens(move |t| t[at] = "<0xFF>?".into())), None);
    }

    #[test]
    fn bpe_vocabularies_need_well_formed_merges() {
        let missing = reason(|w| w.set("tokenizer.ggml.model", "gpt2")).unwrap();
        assert!(
            missing.contains("needs `tokenizer.ggml.merges`"),
            "{missing}"
        );
        let bad = reason(|w| {
            w.set("tokenizer.ggml.model", "gpt2");
            w.set(
                "tokenizer.ggml.merges",
                vec!["a b".to_string(), "ab".to_string()],
            );
        })
        .unwrap();
        assert_eq!(bad, "merge 1 is `ab`, not two pieces separated by a space");
        assert!(well_formed_merge("Ġ t"));
        assert!(well_formed_merge("  a"));
        assert!(!well_formed_merge("a "));
        assert!(!well_formed_merge(" a"));
    }

    #[test]
    fn hyperparameters_llama_cpp_asserts_on_are_checked() {
        let cases: Vec<(&str, WriterChange, &str)> = vec![
            (
                "no layers",
                Box::new(|w| w.set("llama.block_count", 0u32)),
                "`llama.block_count` is 0; llama.cpp allows 1 to 512",
            ),
            (
                "too many layers",
                Box::new(|w| w.set("llama.block_count", 600u32)),
                "`llama.block_count` is 600; llama.cpp allows 1 to 512",
            ),
            (
                "experts unused",
                Box::new(|w| w.set("llama.expert_count", 4u32)),
                "the model uses 0 of 4 experts per token",
            ),
            (
                "experts used but none",
                Box::new(|w| w.set("llama.expert_used_count", 2u32)),
                "the model has no experts but uses 2 per token in 0 groups",
            ),
            (
                "unknown rope scaling",
                Box::new(|w| w.set("llama.rope.scaling.type", "warp")),
                "`llama.rope.scaling.type` is \"warp\"; llama.cpp knows none, linear, yarn, longrope",
            ),
            (
                "negative norm epsilon",
                Box::new(|w| w.set("llama.attention.layer_norm_rms_epsilon", -1e-5f32)),
                "`llama.attention.layer_norm_rms_epsilon` is -0.00001; a norm epsilon must be a non-negative number",
            ),
            (
                "a context beyond 32 bits",
                Box::new(|w| w.set("llama.context_length", u32::MAX)),
                "`llama.context_length` is 4294967295, beyond llama.cpp's 32-bit counts",
            ),
            (
                "alignment of another type",
                Box::new(|w| w.set("general.alignment", 32u64)),
                "`general.alignment` must be a u32, found u64",
            ),
            (
                "architecture not a string",
                Box::new(|w| w.set("general.architecture", 7u32)),
                "`general.architecture` must be a string, found u32",
            ),
        ];
        for (name, change, expected) in cases {
            assert_eq!(reason(change).as_deref(), Some(expected), "{name}");
        }
    }

    /// The tiny model's bytes with `patch` applied to its first tensor info (at the
    /// name's end: n_dims u32, dims u64 each, type u32, offset u64).
    fn patched_tensor(patch: impl FnOnce(&mut [u8], usize)) -> Result<GgufHeader, GgufError> {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), tiny());
        let h = read_header(&path).unwrap();
        let first = &h.tensors[0];
        let mut bytes = std::fs::read(&path).unwrap();
        let mut needle = (first.name.len() as u64).to_le_bytes().to_vec();
        needle.extend_from_slice(first.name.as_bytes());
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .unwrap()
            + needle.len();
        patch(&mut bytes, at);
        std::fs::write(&path, bytes).unwrap();
        read_validated(&path)
    }

    #[test]
    fn tensor_types_shapes_and_offsets_are_checked() {
        let dims = |at: usize| at + 4;
        let ty = |b: &[u8], at: usize| {
            at + 4 + 8 * u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
        };
        let err = patched_tensor(|b, at| {
            let t = ty(b, at);
            b[t..t + 4].copy_from_slice(&4u32.to_le_bytes());
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("has ggml type 4, which this llama.cpp does not know"),
            "{err}"
        );
        let err = patched_tensor(|b, at| {
            let t = ty(b, at);
            b[t + 4..t + 12].copy_from_slice(&32u64.to_le_bytes());
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("starts at data offset 32, but the tensors before it end at 0"),
            "{err}"
        );
        let err = patched_tensor(|b, at| {
            let d = dims(at);
            b[d..d + 8].copy_from_slice(&0u64.to_le_bytes());
        })
        .unwrap_err();
        assert!(err.to_string().contains("has dims [0, "), "{err}");
    }

    #[test]
    fn keys_must_be_unique() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), tiny());
        let mut bytes = std::fs::read(&path).unwrap();
        // Rename one key to another of the same length.
        let (from, to) = ("general.file_type", "llama.block_count");
        let at = bytes
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .unwrap();
        bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let err = read_validated(&path).unwrap_err();
        assert!(
            err.to_string()
                .contains("metadata key `llama.block_count` appears twice"),
            "{err}"
        );
    }
}
