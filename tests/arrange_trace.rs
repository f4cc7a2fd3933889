//! The trace and narration as the CLI shows them (`src/cli/trace.rs`): a performed
//! arrangement's trace rendered readably, and the narrator printing and speaking the
//! lines of a performance.

mod arrange_support;

use arrange_support::*;
use orchestra::score::Request;
use orchestra::trace;

const SONNY: &str = "fn reverse(s: &str) -> String { s.chars().rev().collect() }";

fn standard_score() -> String {
    let members = [
        member("sonny", "code", &model("sonny", SONNY)),
        member(
            "ella",
            "creative",
            &model("ella", "Keep it short and sweet."),
        ),
        member("monk", "analysis", &model("monk", "Mind the empty string.")),
        member("rejecter", "review", &model("rejecter", REJECT)),
    ]
    .concat();
    score(
        &["code", "creative", "analysis", "review"],
        &members,
        r#"local router = route.rules {
          { name = "code words", when = route.keywords { "function", "rust" }, section = "code" },
          { otherwise = "analysis" },
        }
        return arrange.perform(band, req, { router = router, comp = { max_tokens = 16 }, review = { rounds = 1 } })"#,
    )
}

#[tokio::test]
async fn a_trace_renders_as_a_readable_table() {
    let (answer, _) = play(
        "render",
        &standard_score(),
        "write a rust function that reverses a string",
    )
    .await;
    let text = trace::render_trace(&answer.data["trace"]);
    eprintln!("{text}");
    for want in [
        "arrangement (",
        r#"  route     code — rule 1 "code words" (keywords): matched words "function", "rust" ["#,
        "  comp      Ella and Monk — up to 16 tokens each",
        "Ella (creative): Keep it short and sweet.",
        "Monk (analysis): Mind the empty string.",
        "  solo      Sonny (code) — ",
        "with notes from 2 players",
        "  review 1  Rejecter on Sonny: revise — too short; no tests",
        "  revise 1  Sonny — ",
        "  review 2  Rejecter on Sonny: revise — too short; no tests",
        "  answer    Sonny (code), ",
        "1 revision",
        "tempo (tokens/s) and swing (1.0 = perfectly steady timing)",
        "tok/s  swing 0.",
        "solo, revise",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // Instruments in order of entrance, one line each.
    let order: Vec<usize> = ["    Ella ", "    Monk ", "    Sonny ", "    Rejecter "]
        .iter()
        .map(|name| {
            text.find(name)
                .unwrap_or_else(|| panic!("{name} in:\n{text}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn a_partial_or_odd_trace_still_renders() {
    let cases = [
        serde_json::json!({}),
        serde_json::json!({ "route": { "section": "code" } }),
        serde_json::json!({ "reviews": [{ "author": "a", "verdict": "skipped", "why": "nobody else in the band can review" }] }),
        serde_json::json!({ "fallbacks": {}, "instruments": [{ "name": "x", "calls": 1, "tokens": 1 }] }),
        serde_json::json!({ "cascade": { "steps": [{ "player": "a", "error": "x" }, { "player": "b", "verdict": "final" }], "escalations": 1 } }),
    ];
    for trace in cases {
        let text = trace::render_trace(&trace);
        assert!(text.starts_with("arrangement ("), "{text}");
    }
    let text = trace::render_trace(&serde_json::json!({ "cascade": {
        "steps": [{ "player": "sprout", "verdict": "revise" }, { "player": "oak", "verdict": "final" }],
        "escalations": 1 } }));
    assert!(
        text.contains("cascade   Sprout (revise) → Oak (final) — 1 escalation"),
        "{text}"
    );
}

#[tokio::test]
async fn the_narrator_prints_and_speaks_the_story_of_a_performance() {
    let c = start("narrator", &standard_score()).await.unwrap();
    let spoken = test_dir("narrator").join("spoken.txt");
    let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = printed.clone();
    let narrator = trace::Narrator::start(
        c.events(),
        Some(orchestra::narrate::Speaker::new(format!(
            "cat >> {}",
            spoken.display()
        ))),
        Some(Box::new(move |line: &str| {
            sink.lock().unwrap().push(line.to_string())
        })),
    );
    c.perform(Request::prompt("write a rust function"))
        .await
        .unwrap();
    let lines: Vec<String> = narrator
        .finish()
        .await
        .into_iter()
        .filter(|l| !l.ends_with("walking on stage."))
        .collect();
    assert_eq!(
        lines,
        [
            "This one is for the code section.",
            "Ella and Monk are comping.",
            "Sonny is taking a solo.",
            "Rejecter is reviewing Sonny's solo.",
            "Rejecter wants another take.",
            "Sonny plays it again.",
            "Rejecter is reviewing Sonny's solo.",
            "Rejecter wants another take.",
        ]
    );
    let on_stage = |l: &String| !l.ends_with("walking on stage.");
    let printed: Vec<String> = printed
        .lock()
        .unwrap()
        .iter()
        .filter(|l| on_stage(l))
        .cloned()
        .collect();
    assert_eq!(printed, lines, "every line was printed as it happened");
    let said: Vec<String> = std::fs::read_to_string(&spoken)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .filter(on_stage)
        .collect();
    assert_eq!(said, lines, "every line was spoken");
}
