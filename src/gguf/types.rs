//! The GGUF container's vocabulary, shared by the reader and the synthetic-model
//! writer: metadata values, the ggml tensor type table, and the format constants.

use std::fmt;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The version the synthetic-model writer produces.
pub const GGUF_VERSION: u32 = 3;
/// Alignment of tensor data, written as `general.alignment`.
pub const DEFAULT_ALIGNMENT: u32 = 32;
/// llama.cpp's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;

/// GGUF metadata value type ids (`gguf_type`).
pub(crate) mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(MetaArray),
}

/// A metadata array: GGUF arrays hold one element type.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    Array(Vec<MetaArray>),
}

impl MetaValue {
    /// The value as an unsigned integer, from any integer type that holds a
    /// non-negative value (llama.cpp writers disagree on u32 vs i32 vs u64).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, from any numeric type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            // Precision loss above 2^53 is irrelevant for metadata numbers.
            MetaValue::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    pub(crate) fn type_id(&self) -> u32 {
        match self {
            MetaValue::U8(_) => value_type::U8,
            MetaValue::I8(_) => value_type::I8,
            MetaValue::U16(_) => value_type::U16,
            MetaValue::I16(_) => value_type::I16,
            MetaValue::U32(_) => value_type::U32,
            MetaValue::I32(_) => value_type::I32,
            MetaValue::U64(_) => value_type::U64,
            MetaValue::I64(_) => value_type::I64,
            MetaValue::F32(_) => value_type::F32,
            MetaValue::F64(_) => value_type::F64,
            MetaValue::Bool(_) => value_type::BOOL,
            MetaValue::Str(_) => value_type::STRING,
            MetaValue::Array(_) => value_type::ARRAY,
        }
    }
}

impl MetaArray {
    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::F64(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::Str(v) => v.len(),
            MetaArray::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The strings of a string array.
    pub fn as_strs(&self) -> Option<&[String]> {
        match self {
            MetaArray::Str(v) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn elem_type_id(&self) -> u32 {
        match self {
            MetaArray::U8(_) => value_type::U8,
            MetaArray::I8(_) => value_type::I8,
            MetaArray::U16(_) => value_type::U16,
            MetaArray::I16(_) => value_type::I16,
            MetaArray::U32(_) => value_type::U32,
            MetaArray::I32(_) => value_type::I32,
            MetaArray::U64(_) => value_type::U64,
            MetaArray::I64(_) => value_type::I64,
            MetaArray::F32(_) => value_type::F32,
            MetaArray::F64(_) => value_type::F64,
            MetaArray::Bool(_) => value_type::BOOL,
            MetaArray::Str(_) => value_type::STRING,
            MetaArray::Array(_) => value_type::ARRAY,
        }
    }

    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            MetaArray::U8(_) => "u8",
            MetaArray::I8(_) => "i8",
            MetaArray::U16(_) => "u16",
            MetaArray::I16(_) => "i16",
            MetaArray::U32(_) => "u32",
            MetaArray::I32(_) => "i32",
            MetaArray::U64(_) => "u64",
            MetaArray::I64(_) => "i64",
            MetaArray::F32(_) => "f32",
            MetaArray::F64(_) => "f64",
            MetaArray::Bool(_) => "bool",
            MetaArray::Str(_) => "string",
            MetaArray::Array(_) => "array",
        }
    }
}

/// Short human form for `inspect`: long arrays are summarised, not dumped.
impl fmt::Display for MetaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::U8(v) => write!(f, "{v}"),
            MetaValue::I8(v) => write!(f, "{v}"),
            MetaValue::U16(v) => write!(f, "{v}"),
            MetaValue::I16(v) => write!(f, "{v}"),
            MetaValue::U32(v) => write!(f, "{v}"),
            MetaValue::I32(v) => write!(f, "{v}"),
            MetaValue::U64(v) => write!(f, "{v}"),
            MetaValue::I64(v) => write!(f, "{v}"),
            MetaValue::F32(v) => write!(f, "{v}"),
            MetaValue::F64(v) => write!(f, "{v}"),
            MetaValue::Bool(v) => write!(f, "{v}"),
            MetaValue::Str(s) if s.chars().count() > 80 => {
                let head: String = s.chars().take(77).collect();
                write!(f, "{head:?}…")
            }
            MetaValue::Str(s) => write!(f, "{s:?}"),
            MetaValue::Array(a) => write!(f, "[{} × {}]", a.len(), a.type_name()),
        }
    }
}

macro_rules! meta_from {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for MetaValue {
            fn from(v: $t) -> Self {
                MetaValue::$v(v)
            }
        }
        impl From<Vec<$t>> for MetaValue {
            fn from(v: Vec<$t>) -> Self {
                MetaValue::Array(MetaArray::$v(v))
            }
        }
    )*};
}

meta_from!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
    u64 => U64, i64 => I64, f32 => F32, f64 => F64, bool => Bool, String => Str,
);

impl From<&str> for MetaValue {
    fn from(v: &str) -> Self {
        MetaValue::Str(v.to_owned())
    }
}

impl From<MetaArray> for MetaValue {
    fn from(v: MetaArray) -> Self {
        MetaValue::Array(v)
    }
}

/// A ggml tensor type id, known or not: unknown ids still parse so a header from a
/// newer llama.cpp can be inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GgmlType(pub u32);

/// (id, name, elements per block, bytes per block), from ggml.h and `sizeof(block_*)`
/// in ggml-common.h of the llama.cpp we link.
const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
    (42, "Q2_0", 64, 18),
];

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q5_0: GgmlType = GgmlType(6);
    pub const Q5_1: GgmlType = GgmlType(7);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q2_K: GgmlType = GgmlType(10);
    pub const Q3_K: GgmlType = GgmlType(11);
    pub const Q4_K: GgmlType = GgmlType(12);
    pub const Q5_K: GgmlType = GgmlType(13);
    pub const Q6_K: GgmlType = GgmlType(14);
    pub const Q8_K: GgmlType = GgmlType(15);
    pub const BF16: GgmlType = GgmlType(30);

    fn entry(self) -> Option<&'static (u32, &'static str, u64, u64)> {
        GGML_TYPES.iter().find(|e| e.0 == self.0)
    }

    /// The upper-case ggml name (`Q8_0`, `F16`, …), `None` for ids this table lacks.
    pub fn known_name(self) -> Option<&'static str> {
        self.entry().map(|e| e.1)
    }

    /// The name, or `type N` for an unknown id.
    pub fn name(self) -> String {
        self.to_string()
    }

    /// Elements per block (1 for plain types).
    pub fn block_size(self) -> Option<u64> {
        self.entry().map(|e| e.2)
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> Option<u64> {
        self.entry().map(|e| e.3)
    }

    /// Bytes of a tensor with these dims; `None` for an unknown type, a row length that
    /// is not a whole number of blocks, or an overflow.
    pub fn tensor_bytes(self, dims: &[u64]) -> Option<u64> {
        let (block, bytes) = (self.block_size()?, self.block_bytes()?);
        let ne0 = *dims.first()?;
        if !ne0.is_multiple_of(block) {
            return None;
        }
        let rows = dims[1..]
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
        (ne0 / block).checked_mul(bytes)?.checked_mul(rows)
    }

    /// Looks a type up by name, case-insensitively (`q8_0`, `Q4_K`).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GGML_TYPES
            .iter()
            .find(|e| e.1.eq_ignore_ascii_case(name))
            .map(|e| GgmlType(e.0))
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known_name() {
            Some(name) => f.write_str(name),
            None => write!(f, "type {}", self.0),
        }
    }
}

/// Rounds `n` up to a multiple of `align`.
pub(crate) fn align_up(n: u64, align: u64) -> u64 {
    n.div_ceil(align) * align
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_table_sizes_match_ggml() {
        assert_eq!(GgmlType::Q8_0.tensor_bytes(&[64, 3]), Some(2 * 34 * 3));
        assert_eq!(GgmlType::Q4_K.tensor_bytes(&[256, 2]), Some(288));
        assert_eq!(GgmlType::Q6_K.tensor_bytes(&[512]), Some(420));
        assert_eq!(GgmlType::BF16.tensor_bytes(&[3, 5]), Some(30));
        assert_eq!(GgmlType::Q4_0.tensor_bytes(&[48]), None);
        assert_eq!(GgmlType(99).tensor_bytes(&[32]), None);
        assert_eq!(GgmlType(99).name(), "type 99");
        assert_eq!(GgmlType::from_name("q5_k"), Some(GgmlType::Q5_K));
        assert_eq!(GgmlType(23).name(), "IQ4_XS");
    }
}
