//! `orchestra inspect`: what a GGUF file is, read from its header without loading it.

use std::path::PathBuf;

use clap::Args;

use crate::engine::LoadOptions;
use crate::stage::{estimate, human_bytes};

#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// GGUF file to describe, or a reference as in a score (`hf:ORG/REPO/FILE.gguf`),
    /// taken from the Hugging Face cache.
    #[arg(value_name = "FILE|REF")]
    pub path: PathBuf,
    /// Context per request assumed for the footprint estimate (0 = the model's, at most 4096).
    #[arg(long, default_value_t = 0)]
    pub context: u32,
    /// Concurrent requests assumed for the footprint estimate.
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pull: super::hub::PullFlag,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    // An `hf:` reference names a file in the cache (offered for download when missing).
    let path = super::model_file(&args.path.to_string_lossy(), args.pull)?;
    let args = InspectArgs { path, ..args };
    let h = crate::gguf::read_header(&args.path)?;
    let options = LoadOptions {
        context: args.context,
        slots: args.slots,
        ..LoadOptions::default()
    };
    let fp = estimate(&args.path, &options)?;
    let arch = h.architecture().unwrap_or("unknown").to_owned();
    let key = |k: &str| h.get_u64(&format!("{arch}.{k}"));
    let template = h.chat_template().map(str::to_owned);
    // The template `orchestra` will prompt with, and why (a score may still override it).
    let tokens = h.tokens().unwrap_or_default();
    let (used, template_source, template_reason) =
        crate::engine::choose_template(None, template.as_deref(), &arch, &|t: &str| {
            tokens.iter().any(|x| x == t)
        });
    let tool_format = crate::engine::ToolFormat::detect(&used);
    let file_bytes = std::fs::metadata(&args.path)?.len();
    let file_type = file_type(&h);
    let mix = tensor_mix(&h);
    if args.json {
        let v = serde_json::json!({
            "path": args.path,
            "name": h.get_str("general.name"),
            "architecture": arch,
            "parameters": h.parameter_count(),
            "quantisation": file_type,
            "file_type": h.get_u64("general.file_type"),
            "tensor_types": mix.iter().map(|t| serde_json::json!({
                "type": t.name,
                "tensors": t.tensors,
                "parameters": t.parameters,
            })).collect::<Vec<_>>(),
            "context_length": key("context_length"),
            "layers": key("block_count"),
            "embedding_length": key("embedding_length"),
            "heads": key("attention.head_count"),
            "kv_heads": key("attention.head_count_kv"),
            "vocab_size": h.vocab_size(),
            "chat_template": template,
            "template": {
                "source": template_source.to_string(),
                "reason": template_reason,
                "tool_format": tool_format,
            },
            "file_bytes": file_bytes,
            "footprint": fp,
            "footprint_total": fp.total(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
    println!("file          {}", args.path.display());
    if let Some(name) = h.get_str("general.name") {
        println!("name          {name}");
    }
    println!("architecture  {arch}");
    println!("parameters    {:.2}M", h.parameter_count() as f64 / 1e6);
    println!(
        "quantisation  {}",
        file_type.as_deref().unwrap_or("unknown")
    );
    println!("tensor types  {}", describe_mix(&mix, h.parameter_count()));
    println!(
        "context       {} tokens (trained)",
        opt(key("context_length"))
    );
    println!(
        "shape         {} layers, {} embedding, {} heads ({} kv), vocab {}",
        opt(key("block_count")),
        opt(key("embedding_length")),
        opt(key("attention.head_count")),
        opt(key("attention.head_count_kv").or(key("attention.head_count"))),
        opt(h.vocab_size())
    );
    match &template {
        Some(t) => {
            let kind = if t.contains("<|im_start|>") {
                "ChatML"
            } else if t.contains("<|start_header_id|>") {
                "Llama 3"
            } else if t.contains("[INST]") {
                "Mistral/Llama 2"
            } else if t.contains("<|user|>") {
                "Phi-3/Zephyr"
            } else if t.contains("<start_of_turn>") {
                "Gemma"
            } else {
                "custom"
            };
            println!("template      {kind} ({} chars)", t.len());
        }
        None => println!("template      none in the file"),
    }
    println!("prompted with {template_source} ({template_reason}); tool calls: {tool_format}");
    println!("file size     {}", human_bytes(file_bytes));
    println!(
        "footprint     {} = weights {} + KV cache {} + compute {}  (context {}, {} slots)",
        human_bytes(fp.total()),
        human_bytes(fp.weights),
        human_bytes(fp.kv),
        human_bytes(fp.compute),
        if args.context == 0 {
            "default".to_string()
        } else {
            args.context.to_string()
        },
        args.slots
    );
    Ok(())
}

/// The quantisation as llama.cpp names the file (`general.file_type`: `Q4_K_M`), or the
/// most common tensor type when the header does not say. The two differ in real files:
/// a Q4_K_M Qwen2.5 0.5B holds more Q5_0 than Q4_K parameters.
fn file_type(h: &crate::gguf::GgufHeader) -> Option<String> {
    h.get_u64("general.file_type")
        .and_then(|t| u32::try_from(t).ok())
        .and_then(crate::hub::gguf::file_type_name)
        .map(str::to_owned)
        .or_else(|| h.dominant_type_name())
}

/// Tensors of one ggml type.
struct TypeShare {
    name: String,
    tensors: usize,
    parameters: u64,
}

/// Every tensor type in the file, most parameters first.
fn tensor_mix(h: &crate::gguf::GgufHeader) -> Vec<TypeShare> {
    let mut mix: Vec<TypeShare> = Vec::new();
    for t in &h.tensors {
        let name = t.ty.name();
        match mix.iter_mut().find(|m| m.name == name) {
            Some(m) => {
                m.tensors += 1;
                m.parameters += t.element_count();
            }
            None => mix.push(TypeShare {
                name,
                tensors: 1,
                parameters: t.element_count(),
            }),
        }
    }
    mix.sort_by(|a, b| b.parameters.cmp(&a.parameters).then(a.name.cmp(&b.name)));
    mix
}

/// `Q5_0 48% (133), Q8_0 30% (1), …`: share of parameters, tensor count in brackets.
fn describe_mix(mix: &[TypeShare], total: u64) -> String {
    mix.iter()
        .map(|m| {
            let share = 100.0 * m.parameters as f64 / total.max(1) as f64;
            format!("{} {share:.0}% ({} tensors)", m.name, m.tensors)
        })
        .collect::<Vec<_>>()
        .join(", ")
}
