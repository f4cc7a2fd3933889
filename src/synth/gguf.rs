//! Writing GGUF v3: row encoding (f32, f16, q8_0) and a streaming writer, on the
//! container types of [`crate::gguf`]. Owns bytes on disk, not what a model means.
//!
//! Layout written: magic `GGUF`, version, tensor count, metadata count, metadata,
//! tensor infos (name, dims innermost first, type, offset), padding to the alignment,
//! then each tensor's data padded to the alignment. llama.cpp rejects a file whose
//! offsets are not exactly the running sum of padded sizes in header order.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use half::f16;

use crate::gguf::{DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, GgmlType, GgufError, MAX_DIMS};
use crate::gguf::{MetaArray, MetaValue, align_up};

/// Elements per q8_0 block.
pub const Q8_0_BLOCK: usize = 32;
/// Bytes per q8_0 block: an f16 scale, then 32 signed bytes.
pub const Q8_0_BLOCK_BYTES: usize = 34;

/// The tensor types this writer can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorType {
    F32,
    F16,
    Q8_0,
}

impl TensorType {
    pub fn ggml(self) -> GgmlType {
        match self {
            TensorType::F32 => GgmlType::F32,
            TensorType::F16 => GgmlType::F16,
            TensorType::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// `general.file_type` (llama_ftype) of a model whose big tensors have this type.
    pub fn file_type(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q8_0 => 7,
        }
    }

    /// Elements per block: a row length must be a multiple of it.
    pub fn block_size(self) -> usize {
        match self {
            TensorType::F32 | TensorType::F16 => 1,
            TensorType::Q8_0 => Q8_0_BLOCK,
        }
    }

    /// Encoded bytes of a row of `ne0` elements (`ne0` a multiple of the block size).
    pub fn row_bytes(self, ne0: usize) -> usize {
        match self {
            TensorType::F32 => ne0 * 4,
            TensorType::F16 => ne0 * 2,
            TensorType::Q8_0 => ne0 / Q8_0_BLOCK * Q8_0_BLOCK_BYTES,
        }
    }

    /// Appends the encoding of `row` to `out`.
    pub fn encode_row(self, row: &[f32], out: &mut Vec<u8>) {
        match self {
            TensorType::F32 => {
                out.reserve(row.len() * 4);
                for &x in row {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            TensorType::F16 => {
                out.reserve(row.len() * 2);
                for &x in row {
                    out.extend_from_slice(&f16::from_f32(x).to_le_bytes());
                }
            }
            TensorType::Q8_0 => quantize_q8_0(row, out),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TensorType::F32 => "F32",
            TensorType::F16 => "F16",
            TensorType::Q8_0 => "Q8_0",
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TensorType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(TensorType::F32),
            "f16" => Ok(TensorType::F16),
            "q8_0" | "q8" => Ok(TensorType::Q8_0),
            _ => Err(format!(
                "tensor type `{s}` cannot be written: use `f32`, `f16` or `q8_0`"
            )),
        }
    }
}

/// Appends q8_0 blocks for `row` (length a multiple of 32), exactly as ggml's
/// `quantize_row_q8_0_ref`: `d = max|x| / 127` stored as f16, `q = round(x / d)` with
/// the f32 `d`, so files match what llama.cpp's own quantizer writes.
pub fn quantize_q8_0(row: &[f32], out: &mut Vec<u8>) {
    debug_assert_eq!(row.len() % Q8_0_BLOCK, 0, "q8_0 rows are whole blocks");
    out.reserve(row.len() / Q8_0_BLOCK * Q8_0_BLOCK_BYTES);
    for block in row.chunks_exact(Q8_0_BLOCK) {
        let amax = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        // `round` rounds half away from zero, like C's roundf used by ggml.
        out.extend(block.iter().map(|&x| (x * id).round() as i8 as u8));
    }
}

/// Decodes q8_0 blocks back to f32 (for tests and checks).
pub fn dequantize_q8_0(bytes: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(bytes.len() / Q8_0_BLOCK_BYTES * Q8_0_BLOCK);
    for block in bytes.chunks_exact(Q8_0_BLOCK_BYTES) {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        out.extend(block[2..].iter().map(|&q| f32::from(q as i8) * d));
    }
    out
}

/// Produces one row of a tensor: called with the row index (over all dims but the
/// first) and a buffer of `ne0` zeros to fill.
type RowFill<'a> = Box<dyn FnMut(u64, &mut [f32]) + 'a>;

struct PendingTensor<'a> {
    name: String,
    dims: Vec<u64>,
    ty: TensorType,
    offset: u64,
    fill: RowFill<'a>,
}

/// Builds a GGUF file in memory as a description (metadata, tensor shapes and row
/// generators) and streams it to disk: tensor data is produced row by row while
/// writing, so a model never sits in memory twice.
pub struct GgufWriter<'a> {
    alignment: u32,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PendingTensor<'a>>,
    names: HashSet<String>,
    data_size: u64,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> GgufWriter<'a> {
    /// An empty file with 32-byte alignment.
    pub fn new() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: vec![(
                "general.alignment".into(),
                MetaValue::U32(DEFAULT_ALIGNMENT),
            )],
            tensors: Vec::new(),
            names: HashSet::new(),
            data_size: 0,
        }
    }

    /// Sets a metadata key, replacing an earlier value of the same key.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<MetaValue>) {
        let key = key.into();
        let value = value.into();
        if let Some(slot) = self.metadata.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.metadata.push((key, value));
        }
    }

    /// Adds a tensor whose rows `fill` produces while the file is written. `dims` are in
    /// GGUF order, innermost first: `dims[0]` is the row length.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: TensorType,
        fill: impl FnMut(u64, &mut [f32]) + 'a,
    ) -> Result<(), GgufError> {
        let name = name.into();
        let bad = |reason: String| GgufError::BadTensor {
            name: name.clone(),
            reason,
        };
        if name.is_empty() {
            return Err(bad("the name is empty; give every tensor a name".into()));
        }
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(bad(format!(
                "it has {} dims; ggml tensors have 1 to {MAX_DIMS}",
                dims.len()
            )));
        }
        if dims.contains(&0) {
            return Err(bad(format!("dims {dims:?} contain a zero")));
        }
        if !dims[0].is_multiple_of(ty.block_size() as u64) {
            return Err(bad(format!(
                "its row length {} is not a multiple of {}, the {ty} block size; pick a multiple or write it as f32",
                dims[0],
                ty.block_size()
            )));
        }
        let bytes = ty
            .ggml()
            .tensor_bytes(dims)
            .ok_or_else(|| bad(format!("dims {dims:?} overflow")))?;
        if !self.names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor(name));
        }
        let offset = self.data_size;
        self.data_size = offset + align_up(bytes, self.alignment.into());
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ty,
            offset,
            fill: Box::new(fill),
        });
        Ok(())
    }

    /// Adds a tensor from data in memory (row-major, `dims[0]` elements per row).
    pub fn add_tensor_data(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: TensorType,
        data: &'a [f32],
    ) -> Result<(), GgufError> {
        let name = name.into();
        let count = dims.iter().product::<u64>();
        if data.len() as u64 != count {
            return Err(GgufError::BadTensor {
                name,
                reason: format!(
                    "dims {dims:?} need {count} values but {} were given",
                    data.len()
                ),
            });
        }
        let ne0 = dims.first().copied().unwrap_or(0) as usize;
        self.add_tensor(name, dims, ty, move |row, buf| {
            let start = row as usize * ne0;
            buf.copy_from_slice(&data[start..start + ne0]);
        })
    }

    /// Total bytes of tensor data, alignment padding included.
    pub fn data_size(&self) -> u64 {
        self.data_size
    }

    /// Writes the file through a temporary sibling renamed into place, so a crash or an
    /// error never leaves a half-written model under `path`. Returns the file size.
    pub fn write(self, path: impl AsRef<Path>) -> Result<u64, GgufError> {
        let path = path.as_ref();
        let tmp = temp_sibling(path);
        let write_err = |source| GgufError::Write {
            path: path.to_path_buf(),
            source,
        };
        let result = File::create(&tmp)
            .and_then(|file| {
                let mut out = BufWriter::with_capacity(1 << 20, file);
                let size = self.write_to(&mut out)?;
                let file = out.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                Ok(size)
            })
            .and_then(|size| fs::rename(&tmp, path).map(|()| size));
        if result.is_err() {
            // Best effort: the original error is the one worth reporting.
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(write_err)
    }

    /// Writes the whole file to `out`; returns the bytes written.
    pub fn write_to<W: Write>(mut self, out: W) -> io::Result<u64> {
        let mut out = CountingWriter {
            inner: out,
            count: 0,
        };
        out.write_all(&GGUF_MAGIC)?;
        out.write_all(&GGUF_VERSION.to_le_bytes())?;
        out.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        out.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            write_str(&mut out, key)?;
            out.write_all(&value.type_id().to_le_bytes())?;
            write_value(&mut out, value)?;
        }
        for t in &self.tensors {
            write_str(&mut out, &t.name)?;
            out.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                out.write_all(&d.to_le_bytes())?;
            }
            out.write_all(&t.ty.ggml().0.to_le_bytes())?;
            out.write_all(&t.offset.to_le_bytes())?;
        }
        let align = u64::from(self.alignment);
        pad_to(&mut out, align)?;
        let data_start = out.count;

        let mut row = Vec::new();
        let mut bytes = Vec::new();
        for t in &mut self.tensors {
            debug_assert_eq!(out.count - data_start, t.offset);
            let ne0 = t.dims[0] as usize;
            let rows: u64 = t.dims[1..].iter().product();
            row.resize(ne0, 0.0);
            for r in 0..rows {
                row.fill(0.0);
                (t.fill)(r, &mut row);
                bytes.clear();
                t.ty.encode_row(&row, &mut bytes);
                out.write_all(&bytes)?;
            }
            pad_to(&mut out, align)?;
        }
        out.flush()?;
        Ok(out.count)
    }
}

/// A unique temporary name next to `path` (same directory, so the rename is atomic).
fn temp_sibling(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn pad_to<W: Write>(out: &mut CountingWriter<W>, align: u64) -> io::Result<()> {
    let pad = align_up(out.count, align) - out.count;
    out.write_all(&vec![0u8; pad as usize])
}

fn write_str(out: &mut impl Write, s: &str) -> io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s.as_bytes())
}

fn write_value(out: &mut impl Write, value: &MetaValue) -> io::Result<()> {
    match value {
        MetaValue::U8(v) => out.write_all(&v.to_le_bytes()),
        MetaValue::I8(v) => out.write_all(&v.to_le_bytes()),
        MetaValue::U16(v) => out.write_all(&v.to_le_bytes()),
        MetaValue::I16(v) => out.write_all(&v.to_le_bytes()),
        MetaValue::U32(v) => out.write_all(&v.to_le_bytes()),
        MetaValue::I32(v) => out.write_all(&v.to_le_bytes()),
        MetaValue::U64(v) => out.write_all(&v.to_le_bytes()),
        MetaValue::I64(v) => out.write_all(&v.to_le_bytes()),
        MetaValue::F32(v) => out.write_all(&v.to_le_bytes()),
        MetaValue::F64(v) => out.write_all(&v.to_le_bytes()),
        MetaValue::Bool(v) => out.write_all(&[u8::from(*v)]),
        MetaValue::Str(s) => write_str(out, s),
        MetaValue::Array(a) => write_array(out, a),
    }
}

fn write_array(out: &mut impl Write, array: &MetaArray) -> io::Result<()> {
    out.write_all(&array.elem_type_id().to_le_bytes())?;
    out.write_all(&(array.len() as u64).to_le_bytes())?;
    macro_rules! le {
        ($v:expr) => {{
            for x in $v {
                out.write_all(&x.to_le_bytes())?;
            }
            Ok(())
        }};
    }
    match array {
        MetaArray::U8(v) => out.write_all(v),
        MetaArray::I8(v) => le!(v),
        MetaArray::U16(v) => le!(v),
        MetaArray::I16(v) => le!(v),
        MetaArray::U32(v) => le!(v),
        MetaArray::I32(v) => le!(v),
        MetaArray::U64(v) => le!(v),
        MetaArray::I64(v) => le!(v),
        MetaArray::F32(v) => le!(v),
        MetaArray::F64(v) => le!(v),
        MetaArray::Bool(v) => {
            for &b in v {
                out.write_all(&[u8::from(b)])?;
            }
            Ok(())
        }
        MetaArray::Str(v) => {
            for s in v {
                write_str(out, s)?;
            }
            Ok(())
        }
        MetaArray::Array(v) => {
            for a in v {
                write_array(out, a)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_quantises_known_values_like_ggml() {
        // max|x| = 63.5 gives d = 0.5 exactly, so every expected value is exact.
        let mut row = [0.0f32; 32];
        row[0] = 63.5;
        row[1] = -1.25;
        row[2] = 0.75;
        row[3] = 0.2;
        row[31] = -63.5;
        let mut out = Vec::new();
        quantize_q8_0(&row, &mut out);
        assert_eq!(out.len(), Q8_0_BLOCK_BYTES);
        assert_eq!(f16::from_le_bytes([out[0], out[1]]), f16::from_f32(0.5));
        let q: Vec<i8> = out[2..].iter().map(|&b| b as i8).collect();
        assert_eq!(q[0], 127);
        // -2.5 and 1.5 round half away from zero, as C's roundf does.
        assert_eq!(q[1], -3);
        assert_eq!(q[2], 2);
        assert_eq!(q[3], 0);
        assert_eq!(q[4], 0);
        assert_eq!(q[31], -127);
        let back = dequantize_q8_0(&out);
        assert_eq!(back[0], 63.5);
        assert_eq!(back[1], -1.5);
        assert_eq!(back[31], -63.5);
    }

    #[test]
    fn q8_0_zero_block_has_zero_scale() {
        let mut out = Vec::new();
        quantize_q8_0(&[0.0; 64], &mut out);
        assert_eq!(out, vec![0u8; 2 * Q8_0_BLOCK_BYTES]);
    }

    #[test]
    fn q8_0_keeps_one_hot_rows_equal() {
        // Rehearsal models rely on equal entries staying equal after quantisation.
        let mut row = vec![0.0f32; 96];
        row[0] = 1.0;
        row[70] = 1.0;
        let mut out = Vec::new();
        quantize_q8_0(&row, &mut out);
        let back = dequantize_q8_0(&out);
        assert_eq!(back[0], back[70]);
        assert!((back[0] - 1.0).abs() < 1e-3);
        assert!(
            back.iter()
                .enumerate()
                .all(|(i, &x)| i == 0 || i == 70 || x == 0.0)
        );
    }

    #[test]
    fn tensor_type_parses_user_spellings() {
        assert_eq!("Q8_0".parse::<TensorType>(), Ok(TensorType::Q8_0));
        assert_eq!("f16".parse::<TensorType>(), Ok(TensorType::F16));
        assert!("q4_k".parse::<TensorType>().unwrap_err().contains("`q4_k`"));
    }

    #[test]
    fn writer_rejects_bad_tensors() {
        let mut w = GgufWriter::new();
        let err = w
            .add_tensor("a", &[40, 2], TensorType::Q8_0, |_, _| {})
            .unwrap_err();
        assert!(err.to_string().contains("not a multiple of 32"), "{err}");
        w.add_tensor("b", &[32], TensorType::F32, |_, _| {})
            .unwrap();
        let err = w
            .add_tensor("b", &[32], TensorType::F32, |_, _| {})
            .unwrap_err();
        assert!(matches!(err, GgufError::DuplicateTensor(_)));
        let err = w.add_tensor("c", &[1, 1, 1, 1, 1], TensorType::F32, |_, _| {});
        assert!(err.is_err());
    }

    #[test]
    fn offsets_are_running_sums_of_padded_sizes() {
        let mut w = GgufWriter::new();
        w.add_tensor("a", &[3], TensorType::F32, |_, _| {}).unwrap();
        w.add_tensor("b", &[32, 2], TensorType::Q8_0, |_, _| {})
            .unwrap();
        w.add_tensor("c", &[5], TensorType::F16, |_, _| {}).unwrap();
        let offsets: Vec<u64> = w.tensors.iter().map(|t| t.offset).collect();
        assert_eq!(offsets, vec![0, 32, 32 + 96]);
        assert_eq!(w.data_size(), 32 + 96 + 32);
    }
}
