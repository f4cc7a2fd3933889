//! What `orchestra models` shows about a GGUF file — architecture, parameter count,
//! quantisation — from its header, read by `crate::gguf::read_header` (kilobytes, never
//! tensor data). Reads files only.

use std::path::PathBuf;

use crate::gguf::read_header;

/// Header facts about a GGUF model (all parts of a split model together).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GgufSummary {
    /// `general.architecture` (`llama`, `qwen2`, …).
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// Sum of the elements of every tensor in every part.
    pub parameters: u64,
    /// Quantisation from `general.file_type` (`Q4_K_M`, …).
    pub quant: Option<String>,
}

/// Reads the headers of a model's parts (part 1 first). `None` when the first part is
/// not a readable GGUF file.
pub fn summarize(parts: &[PathBuf]) -> Option<GgufSummary> {
    let first = read_header(parts.first()?).ok()?;
    let parameters = first.parameter_count()
        + parts[1..]
            .iter()
            .filter_map(|p| read_header(p).ok())
            .map(|h| h.parameter_count())
            .sum::<u64>();
    Some(GgufSummary {
        architecture: first.architecture().map(str::to_string),
        name: first.name().map(str::to_string),
        parameters,
        quant: first
            .get_u64("general.file_type")
            .and_then(|t| u32::try_from(t).ok())
            .and_then(file_type_name)
            .map(str::to_string),
    })
}

/// llama.cpp's `LLAMA_FTYPE_*` names: what `general.file_type` = 15 means (`Q4_K_M`).
pub fn file_type_name(ftype: u32) -> Option<&'static str> {
    Some(match ftype {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        39 => "NVFP4",
        40 => "Q1_0",
        41 => "Q2_0",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_gives_architecture_parameters_and_quantisation() {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join("tiny.gguf");
        let spec = crate::synth::tiny_spec();
        crate::synth::write_model(&spec, &path).unwrap();
        let s = summarize(std::slice::from_ref(&path)).unwrap();
        assert_eq!(s.architecture.as_deref(), Some("llama"));
        // Counted from the tensors in the header; the spec's formula knows it apart.
        let n_vocab = crate::synth::Vocab::new().len() as u64;
        assert_eq!(s.parameters, spec.parameter_count(n_vocab));
        assert!(s.quant.is_some());
        assert_eq!(file_type_name(15), Some("Q4_K_M"));
    }
}
