//! Embedding the runtime from Rust: route requests to the section whose example
//! requests are nearest in meaning, with a real embedding model.
//!
//! ```sh
//! cargo run --release --example semantic_route -- ../shared/models/all-minilm-l6-v2-f16.gguf \
//!     tests/data/semantic_routing.tsv
//! ```
//! The second argument is a file of `section<TAB>request` lines to score; the examples
//! are the ones below (the same as `scores/default.lua`).

use orchestra::engine::{LoadOptions, Model};

const EXAMPLES: &[(&str, &[&str])] = &[
    (
        "code",
        &[
            "fix this stack trace",
            "write a function that reverses a string",
            "why does this code not compile",
            "debug a segmentation fault",
            "how do I use async and await",
            "optimize this slow loop",
            "write a regular expression that matches email addresses",
            "set up a REST API endpoint",
            "write a shell script that backs up a directory",
            "resolve a git merge conflict",
            "my program crashes with a null pointer exception",
            "implement quicksort",
        ],
    ),
    (
        "creative",
        &[
            "write a poem about the rain",
            "tell me a story about a knight",
            "write lyrics for a jazz ballad",
            "describe a magical forest",
            "invent a character for my novel",
            "write a funny poem",
            "a short story for children",
            "write a scene for a screenplay",
            "brainstorm a catchy name for my band",
            "write a greeting card message",
        ],
    ),
    (
        "analysis",
        &[
            "compare two options and recommend one",
            "explain the causes of climate change",
            "what are the advantages and disadvantages of remote work",
            "summarize this article",
            "analyze the market trends",
            "why did this historical event happen",
            "explain how vaccines work",
            "evaluate this business plan",
            "what does this data tell us",
            "give me the key points of this report",
        ],
    ),
];

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model_path = args
        .next()
        .expect("usage: semantic_route MODEL.gguf LABELLED.tsv");
    let labelled = std::fs::read_to_string(args.next().expect("a labelled .tsv file"))?;
    let model = Model::load(
        &model_path,
        &LoadOptions {
            embeddings: true,
            context: 512,
            slots: 8,
            ..LoadOptions::default()
        },
    )?;
    let mut sections = Vec::new();
    for (section, examples) in EXAMPLES {
        let v = model
            .embed(examples.iter().map(|s| s.to_string()).collect())
            .await?;
        sections.push((*section, v));
    }
    let (mut right, mut total) = (0, 0);
    for line in labelled
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (want, text) = line.split_once('\t').expect("section<TAB>request");
        let q = &model.embed(vec![text.to_string()]).await?[0];
        let best = sections
            .iter()
            .map(|(s, ex)| {
                let sim = ex.iter().map(|e| cosine(q, e)).fold(f32::MIN, f32::max);
                (*s, sim)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        total += 1;
        if best.0 == want {
            right += 1;
        } else {
            println!("miss: {want} -> {} ({:.3}): {text}", best.0, best.1);
        }
    }
    println!(
        "{right}/{total} routed to the labelled section ({:.1}%)",
        100.0 * right as f64 / total as f64
    );
    Ok(())
}
