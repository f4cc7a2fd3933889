//! GGUF header reader: metadata and tensor infos, never tensor data, so inspecting a
//! 40 GB model reads kilobytes. Checks the file is long enough for what it declares;
//! whether llama.cpp can load what it declares is `validate`'s.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::error::GgufError;
use super::types::{GGUF_MAGIC, GgmlType, MetaArray, MetaValue, align_up, value_type};

/// Where one tensor lives in a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Innermost first: `dims[0]` is the row length (ggml's `ne0`).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset from the start of the tensor data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn element_count(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of data, `None` for a type the table does not know.
    pub fn byte_size(&self) -> Option<u64> {
        self.ty.tensor_bytes(&self.dims)
    }
}

/// Everything in a GGUF file before the tensor data.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub path: PathBuf,
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset where tensor data starts.
    pub data_offset: u64,
    pub file_size: u64,
    /// File offset of each metadata entry's type tag, in `metadata` order: validation
    /// re-reads string arrays byte-exact (`metadata` holds them lossily as UTF-8).
    pub(crate) value_offsets: Vec<u64>,
}

impl GgufHeader {
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// An integer value of any integer type, if non-negative.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }

    /// `general.architecture` (`llama`, `qwen2`, …).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// `general.name`.
    pub fn name(&self) -> Option<&str> {
        self.get_str("general.name")
    }

    /// An architecture-scoped key such as `{arch}.context_length`.
    fn arch_u64(&self, suffix: &str) -> Option<u64> {
        self.get_u64(&format!("{}.{suffix}", self.architecture()?))
    }

    /// `{arch}.context_length`: the context the model was trained for.
    pub fn context_length(&self) -> Option<u64> {
        self.arch_u64("context_length")
    }

    /// `{arch}.block_count`.
    pub fn layer_count(&self) -> Option<u64> {
        self.arch_u64("block_count")
    }

    /// `{arch}.embedding_length`.
    pub fn embedding_length(&self) -> Option<u64> {
        self.arch_u64("embedding_length")
    }

    /// `{arch}.attention.head_count`.
    pub fn head_count(&self) -> Option<u64> {
        self.arch_u64("attention.head_count")
    }

    /// `{arch}.attention.head_count_kv`, defaulting to the head count as llama.cpp does.
    pub fn head_count_kv(&self) -> Option<u64> {
        self.arch_u64("attention.head_count_kv")
            .or_else(|| self.head_count())
    }

    /// `{arch}.feed_forward_length`.
    pub fn feed_forward_length(&self) -> Option<u64> {
        self.arch_u64("feed_forward_length")
    }

    /// The number of tokens: the length of `tokenizer.ggml.tokens`, else
    /// `{arch}.vocab_size`.
    pub fn vocab_size(&self) -> Option<u64> {
        self.get("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array)
            .map(|a| a.len() as u64)
            .or_else(|| self.arch_u64("vocab_size"))
    }

    /// `tokenizer.chat_template`.
    pub fn chat_template(&self) -> Option<&str> {
        self.get_str("tokenizer.chat_template")
    }

    /// The token strings, if the file has a vocabulary.
    pub fn tokens(&self) -> Option<&[String]> {
        self.get("tokenizer.ggml.tokens")?.as_array()?.as_strs()
    }

    /// Sum of all tensors' element counts.
    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::element_count).sum()
    }

    /// The tensor type holding the most parameters (what `Q8_0` in a file name means;
    /// the small norm tensors are f32 in every quantised model).
    pub fn dominant_type(&self) -> Option<GgmlType> {
        let mut counts: Vec<(GgmlType, u64)> = Vec::new();
        for t in &self.tensors {
            match counts.iter_mut().find(|(ty, _)| *ty == t.ty) {
                Some((_, n)) => *n += t.element_count(),
                None => counts.push((t.ty, t.element_count())),
            }
        }
        // Ties go to the type seen first, so the answer never depends on sort details.
        counts
            .into_iter()
            .fold(None, |best: Option<(GgmlType, u64)>, (ty, n)| match best {
                Some((_, m)) if m >= n => best,
                _ => Some((ty, n)),
            })
            .map(|(ty, _)| ty)
    }

    /// Name of [`dominant_type`](Self::dominant_type): `Q8_0`, `F16`, ….
    pub fn dominant_type_name(&self) -> Option<String> {
        self.dominant_type().map(GgmlType::name)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Bytes of tensor data (through the end of the last tensor).
    pub fn tensor_data_size(&self) -> u64 {
        self.tensors
            .iter()
            .filter_map(|t| Some(t.offset + t.byte_size()?))
            .max()
            .unwrap_or(0)
    }
}

/// Reads the header of the GGUF file at `path`: metadata and tensor infos, without
/// the tensor data. Fails with a message naming the file when it is missing, is not
/// GGUF, or is shorter than its header says.
pub fn read_header(path: impl AsRef<Path>) -> Result<GgufHeader, GgufError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => GgufError::Missing(path.to_path_buf()),
        _ => GgufError::Read {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let file_size = file
        .metadata()
        .map_err(|e| GgufError::Read {
            path: path.to_path_buf(),
            source: e,
        })?
        .len();
    let mut r = HeaderReader {
        inner: BufReader::with_capacity(1 << 16, file),
        pos: 0,
        size: file_size,
        path,
    };

    let mut magic = [0u8; 4];
    let got = r.read_up_to(&mut magic)?;
    if got < 4 || magic != GGUF_MAGIC {
        // A few more bytes make the culprit recognisable (`<!DOCTYPE html>` from a
        // failed download, `PK` from a zip).
        let mut start = magic[..got].to_vec();
        let mut more = [0u8; 12];
        let extra = r.read_up_to(&mut more)?;
        start.extend_from_slice(&more[..extra]);
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
            start: describe_start(&start),
        });
    }
    let version = r.u32()?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    // Every entry takes at least a few bytes: a count larger than the file is either
    // corruption or truncation, and must not become a huge allocation.
    r.check_count(n_kv, 8 + 4)?;
    r.check_count(n_tensors, 8 + 4 + 4 + 8)?;

    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut value_offsets = Vec::with_capacity(n_kv as usize);
    for _ in 0..n_kv {
        let key = r.string()?;
        value_offsets.push(r.pos);
        let ty = r.u32()?;
        let value = r.value(ty, &key)?;
        metadata.push((key, value));
    }

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims == 0 || n_dims > 4 {
            return Err(r.malformed(format!(
                "tensor `{name}` has {n_dims} dims (1 to 4 allowed)"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64()?);
        }
        let ty = GgmlType(r.u32()?);
        let offset = r.u64()?;
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
        });
    }

    let alignment = metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| v.as_u64())
        .unwrap_or(32);
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(r.malformed(format!(
            "`general.alignment` is {alignment}; it must be a power of two"
        )));
    }
    let data_offset = align_up(r.pos, alignment);

    for t in &tensors {
        let Some(bytes) = t.byte_size() else {
            // Unknown type or odd shape: its size cannot be checked, only listed.
            continue;
        };
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|e| e.checked_add(bytes));
        match end {
            Some(end) if end <= file_size => {}
            _ => {
                return Err(GgufError::TruncatedData {
                    path: path.to_path_buf(),
                    tensor: t.name.clone(),
                    needed: end.unwrap_or(u64::MAX),
                    size: file_size,
                });
            }
        }
    }

    Ok(GgufHeader {
        path: path.to_path_buf(),
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
        file_size,
        value_offsets,
    })
}

/// The first bytes of a non-GGUF file, escaped, for the error message.
fn describe_start(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "nothing: the file is empty".into();
    }
    let escaped: String = bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    format!("\"{escaped}\"")
}

struct HeaderReader<'p> {
    inner: BufReader<File>,
    pos: u64,
    size: u64,
    path: &'p Path,
}

impl HeaderReader<'_> {
    fn truncated(&self) -> GgufError {
        GgufError::TruncatedHeader {
            path: self.path.to_path_buf(),
            size: self.size,
        }
    }

    fn malformed(&self, reason: String) -> GgufError {
        GgufError::Malformed {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn io(&self, e: io::Error) -> GgufError {
        GgufError::Read {
            path: self.path.to_path_buf(),
            source: e,
        }
    }

    /// Reads as much of `buf` as the file has; returns how much.
    fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize, GgufError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        self.pos += got as u64;
        Ok(got)
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, GgufError> {
        if n > self.size.saturating_sub(self.pos) {
            return Err(self.truncated());
        }
        let mut buf = vec![0u8; n as usize];
        match self.inner.read_exact(&mut buf) {
            Ok(()) => {
                self.pos += n;
                Ok(buf)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.truncated()),
            Err(e) => Err(self.io(e)),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        match self.inner.read_exact(&mut buf) {
            Ok(()) => {
                self.pos += N as u64;
                Ok(buf)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.truncated()),
            Err(e) => Err(self.io(e)),
        }
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        self.array().map(u64::from_le_bytes)
    }

    /// Fails when `count` items of at least `min_size` bytes cannot fit in the rest of
    /// the file.
    fn check_count(&self, count: u64, min_size: u64) -> Result<(), GgufError> {
        let remaining = self.size.saturating_sub(self.pos);
        if count.saturating_mul(min_size) > remaining {
            return Err(self.truncated());
        }
        Ok(())
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        let bytes = self.bytes(len)?;
        // Token strings of some converted models are not valid UTF-8 (byte fragments);
        // the header must still be readable.
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    fn value(&mut self, ty: u32, key: &str) -> Result<MetaValue, GgufError> {
        Ok(match ty {
            value_type::U8 => MetaValue::U8(u8::from_le_bytes(self.array()?)),
            value_type::I8 => MetaValue::I8(i8::from_le_bytes(self.array()?)),
            value_type::U16 => MetaValue::U16(u16::from_le_bytes(self.array()?)),
            value_type::I16 => MetaValue::I16(i16::from_le_bytes(self.array()?)),
            value_type::U32 => MetaValue::U32(u32::from_le_bytes(self.array()?)),
            value_type::I32 => MetaValue::I32(i32::from_le_bytes(self.array()?)),
            value_type::U64 => MetaValue::U64(u64::from_le_bytes(self.array()?)),
            value_type::I64 => MetaValue::I64(i64::from_le_bytes(self.array()?)),
            value_type::F32 => MetaValue::F32(f32::from_le_bytes(self.array()?)),
            value_type::F64 => MetaValue::F64(f64::from_le_bytes(self.array()?)),
            value_type::BOOL => MetaValue::Bool(self.array::<1>()?[0] != 0),
            value_type::STRING => MetaValue::Str(self.string()?),
            value_type::ARRAY => MetaValue::Array(self.array_value(key)?),
            other => {
                return Err(self.malformed(format!(
                    "metadata key `{key}` has unknown value type {other}"
                )));
            }
        })
    }

    fn array_value(&mut self, key: &str) -> Result<MetaArray, GgufError> {
        let elem = self.u32()?;
        let n = self.u64()?;
        macro_rules! fixed {
            ($t:ty, $variant:ident) => {{
                const SIZE: usize = std::mem::size_of::<$t>();
                self.check_count(n, SIZE as u64)?;
                let raw = self.bytes(n * SIZE as u64)?;
                MetaArray::$variant(
                    raw.chunks_exact(SIZE)
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of SIZE")))
                        .collect(),
                )
            }};
        }
        Ok(match elem {
            value_type::U8 => {
                self.check_count(n, 1)?;
                MetaArray::U8(self.bytes(n)?)
            }
            value_type::I8 => fixed!(i8, I8),
            value_type::U16 => fixed!(u16, U16),
            value_type::I16 => fixed!(i16, I16),
            value_type::U32 => fixed!(u32, U32),
            value_type::I32 => fixed!(i32, I32),
            value_type::U64 => fixed!(u64, U64),
            value_type::I64 => fixed!(i64, I64),
            value_type::F32 => fixed!(f32, F32),
            value_type::F64 => fixed!(f64, F64),
            value_type::BOOL => {
                self.check_count(n, 1)?;
                MetaArray::Bool(self.bytes(n)?.into_iter().map(|b| b != 0).collect())
            }
            value_type::STRING => {
                self.check_count(n, 8)?;
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.string()?);
                }
                MetaArray::Str(v)
            }
            value_type::ARRAY => {
                self.check_count(n, 12)?;
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.array_value(key)?);
                }
                MetaArray::Array(v)
            }
            other => {
                return Err(self.malformed(format!(
                    "metadata key `{key}` is an array of unknown type {other}"
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{GgufWriter, TensorType};
    use tempfile::TempDir;

    fn sample_file(dir: &TempDir) -> PathBuf {
        let path = dir.path().join("sample.gguf");
        let data: Vec<f32> = (0..64 * 3).map(|i| i as f32 / 100.0).collect();
        let mut w = GgufWriter::new();
        w.set("general.architecture", "llama");
        w.set("general.name", "sample");
        w.set("llama.context_length", 256u32);
        w.set("llama.block_count", 2u64);
        w.set("llama.attention.head_count", 4i32);
        w.set("some.u8", 7u8);
        w.set("some.i8", -7i8);
        w.set("some.f32", 0.5f32);
        w.set("some.bool", true);
        w.set("some.f64", 2.5f64);
        w.set("some.i64", -3i64);
        w.set(
            "tokenizer.ggml.tokens",
            vec!["<unk>".to_string(), "▁a".to_string(), "☕".to_string()],
        );
        w.set("tokenizer.ggml.scores", vec![0.0f32, -1.0, -2.0]);
        w.set("tokenizer.ggml.token_type", vec![2i32, 1, 1]);
        w.set("some.u32s", vec![1u32, 2, 3]);
        w.set("tokenizer.chat_template", "{{ messages }}");
        w.add_tensor_data("token_embd.weight", &[64, 3], TensorType::Q8_0, &data)
            .unwrap();
        w.add_tensor("output_norm.weight", &[64], TensorType::F32, |_, b| {
            b.fill(1.0)
        })
        .unwrap();
        w.add_tensor_data("output.weight", &[64, 2], TensorType::F16, &data[..128])
            .unwrap();
        w.write(&path).unwrap();
        path
    }

    #[test]
    fn writer_output_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample_file(&dir);
        let h = read_header(&path).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.alignment, 32);
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.name(), Some("sample"));
        assert_eq!(h.context_length(), Some(256));
        assert_eq!(h.layer_count(), Some(2));
        assert_eq!(h.head_count(), Some(4));
        assert_eq!(h.head_count_kv(), Some(4));
        assert_eq!(h.get("some.u8"), Some(&MetaValue::U8(7)));
        assert_eq!(h.get("some.i8"), Some(&MetaValue::I8(-7)));
        assert_eq!(h.get("some.f32"), Some(&MetaValue::F32(0.5)));
        assert_eq!(h.get("some.bool"), Some(&MetaValue::Bool(true)));
        assert_eq!(h.get_f64("some.f64"), Some(2.5));
        assert_eq!(h.get_u64("some.i64"), None);
        assert_eq!(
            h.get("some.u32s"),
            Some(&MetaValue::Array(MetaArray::U32(vec![1, 2, 3])))
        );
        assert_eq!(h.tokens().unwrap(), ["<unk>", "▁a", "☕"]);
        assert_eq!(h.vocab_size(), Some(3));
        assert_eq!(h.chat_template(), Some("{{ messages }}"));
        assert_eq!(h.parameter_count(), 64 * 3 + 64 + 64 * 2);
        assert_eq!(h.dominant_type_name().as_deref(), Some("Q8_0"));

        let names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["token_embd.weight", "output_norm.weight", "output.weight"]
        );
        let embd = h.tensor("token_embd.weight").unwrap();
        assert_eq!(embd.dims, [64, 3]);
        assert_eq!(embd.ty, GgmlType::Q8_0);
        assert_eq!(embd.offset, 0);
        // 6 q8_0 blocks = 204 bytes, padded to 224.
        assert_eq!(h.tensor("output_norm.weight").unwrap().offset, 224);
        assert_eq!(h.tensor("output.weight").unwrap().offset, 224 + 256);
        assert_eq!(h.data_offset % 32, 0);
        assert_eq!(h.file_size, h.data_offset + 224 + 256 + 256);
        assert_eq!(h.tensor_data_size(), 224 + 256 + 256);

        // The q8_0 payload decodes back to the input.
        let bytes = std::fs::read(&path).unwrap();
        let start = h.data_offset as usize;
        let back = crate::synth::dequantize_q8_0(&bytes[start..start + 204]);
        for (i, x) in back.iter().enumerate() {
            assert!((x - i as f32 / 100.0).abs() < 0.01, "{i}: {x}");
        }
    }

    #[test]
    fn missing_file_is_reported_as_missing() {
        let err = read_header("/nonexistent/dir/model.gguf").unwrap_err();
        assert!(matches!(err, GgufError::Missing(_)));
        assert_eq!(
            err.to_string(),
            "model file `/nonexistent/dir/model.gguf` does not exist: check the path"
        );
    }

    #[test]
    fn non_gguf_file_says_what_it_starts_with() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, b"PK\x03\x04zip").unwrap();
        let err = read_header(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "`{}` is not a GGUF file (it starts with \"PK\\x03\\x04zip\"); expected a .gguf model",
                path.display()
            )
        );
        std::fs::write(&path, b"<!DOCTYPE html><html><body>Not found</body></html>").unwrap();
        let err = read_header(&path).unwrap_err();
        assert!(err.to_string().contains("\"<!DOCTYPE html><\")"), "{err}");
        std::fs::write(&path, b"").unwrap();
        let err = read_header(&path).unwrap_err();
        assert!(err.to_string().contains("the file is empty"), "{err}");
    }

    #[test]
    fn truncated_files_are_reported_as_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample_file(&dir);
        let full = std::fs::read(&path).unwrap();
        let h = read_header(&path).unwrap();

        // Cut inside the tensor data: the header parses, the last tensor does not fit.
        std::fs::write(&path, &full[..full.len() - 10]).unwrap();
        let err = read_header(&path).unwrap_err();
        assert!(
            matches!(&err, GgufError::TruncatedData { tensor, .. } if tensor == "output.weight"),
            "{err}"
        );
        assert!(err.to_string().contains("download it again"));

        // Cut inside the metadata.
        std::fs::write(&path, &full[..100]).unwrap();
        let err = read_header(&path).unwrap_err();
        assert!(matches!(err, GgufError::TruncatedHeader { .. }), "{err}");

        // Cut right after the tensor infos.
        std::fs::write(&path, &full[..h.data_offset as usize]).unwrap();
        let err = read_header(&path).unwrap_err();
        assert!(
            matches!(&err, GgufError::TruncatedData { tensor, .. } if tensor == "token_embd.weight"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_version_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.gguf");
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&[0; 16]);
        std::fs::write(&path, bytes).unwrap();
        let err = read_header(&path).unwrap_err();
        assert!(matches!(
            err,
            GgufError::UnsupportedVersion { version: 1, .. }
        ));
    }

    #[test]
    fn absurd_counts_do_not_allocate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.gguf");
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        let err = read_header(&path).unwrap_err();
        assert!(matches!(err, GgufError::TruncatedHeader { .. }), "{err}");
    }

    #[test]
    fn unknown_tensor_types_still_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample_file(&dir);
        let mut bytes = std::fs::read(&path).unwrap();
        let h = read_header(&path).unwrap();
        // Patch the type id of the first tensor info (after name, n_dims, dims).
        let name = b"token_embd.weight";
        let at = bytes.windows(name.len()).position(|w| w == name).unwrap();
        let type_at = at + name.len() + 4 + 2 * 8;
        bytes[type_at..type_at + 4].copy_from_slice(&77u32.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        let h2 = read_header(&path).unwrap();
        assert_eq!(h2.tensors[0].ty.name(), "type 77");
        assert_eq!(h2.tensors.len(), h.tensors.len());
    }
}
