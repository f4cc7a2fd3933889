//! Embedding orchestra in a Rust program: a stage with a memory budget, two synthetic
//! rehearsal models, and two requests played at the same time.
//!
//! ```sh
//! cargo run --release --example embed
//! ```

use orchestra::engine::{GenerateRequest, LoadOptions, SamplingParams};
use orchestra::events::EventBus;
use orchestra::stage::{ModelSpec, Stage, StageConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The rehearsal band: tiny models whose greedy answer is a fixed line.
    let dir = std::env::temp_dir().join("orchestra-example-embed");
    let paths = orchestra::synth::write_rehearsal_band(&dir)?;
    let band = orchestra::synth::rehearsal_band();

    let stage = Stage::new(
        StageConfig {
            budget: 1 << 30,
            ..StageConfig::default()
        },
        EventBus::new(),
    );
    for (member, path) in band.iter().zip(&paths) {
        let options = LoadOptions {
            context: 512,
            slots: 2,
            ..LoadOptions::default()
        };
        stage.add(ModelSpec::new(member.name, path).with_options(options));
    }

    let ask = |name: &'static str| {
        let stage = stage.clone();
        async move {
            let model = stage.acquire(name).await?;
            let request = GenerateRequest::user("play something")
                .with_sampling(SamplingParams::greedy())
                .with_max_tokens(64);
            let answer = model.generate(request)?.finish().await?;
            anyhow::Ok((name, answer))
        }
    };
    let (a, b) = tokio::join!(ask("coltrane"), ask("ella"));
    for (name, answer) in [a?, b?] {
        println!(
            "{name}: {} ({} tokens, {:.0} tok/s)",
            answer.text, answer.completion_tokens, answer.timings.decode_tok_s
        );
    }
    for r in stage.resident() {
        println!("resident: {} ({} bytes)", r.name, r.footprint_bytes);
    }
    Ok(())
}
