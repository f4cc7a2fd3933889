//! `orchestra inspect`: what a GGUF file is, read from its header without loading it.

use std::path::PathBuf;

use clap::Args;

use crate::engine::LoadOptions;
use crate::stage::{estimate, human_bytes};

#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// GGUF file to describe.
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
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let h = crate::synth::read_header(&args.path)?;
    let options = LoadOptions {
        context: args.context,
        slots: args.slots,
        ..LoadOptions::default()
    };
    let fp = estimate(&args.path, &options)?;
    let arch = h.architecture().unwrap_or("unknown").to_owned();
    let key = |k: &str| h.get_u64(&format!("{arch}.{k}"));
    let template = h.chat_template().map(str::to_owned);
    let file_bytes = std::fs::metadata(&args.path)?.len();
    if args.json {
        let v = serde_json::json!({
            "path": args.path,
            "name": h.get_str("general.name"),
            "architecture": arch,
            "parameters": h.parameter_count(),
            "quantisation": h.dominant_type_name(),
            "context_length": key("context_length"),
            "layers": key("block_count"),
            "embedding_length": key("embedding_length"),
            "heads": key("attention.head_count"),
            "kv_heads": key("attention.head_count_kv"),
            "vocab_size": h.vocab_size(),
            "chat_template": template,
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
        h.dominant_type_name().unwrap_or_else(|| "unknown".into())
    );
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
        None => println!("template      none (ChatML fallback)"),
    }
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
