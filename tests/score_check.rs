//! `orchestra check`: a score is validated without running a model — syntax, the
//! returned table, every model resolvable, section names — and the rehearsal score
//! checks and plays.

mod score_support;

use orchestra::events::EventKind;
use orchestra::score::{Conductor, Request, ScoreSource, check};
use score_support::*;

#[tokio::test]
async fn a_valid_score_reports_its_band_without_loading_a_model() {
    let path = write_score("valid", &score_with("return 1"));
    let opts = options();
    let mut events = opts.events.subscribe();
    let report = check(ScoreSource::file(&path), opts).await.unwrap();
    assert_eq!(report.bands.len(), 1);
    let band = &report.bands[0];
    assert_eq!(band.memory, 2 << 30);
    let names: Vec<_> = band.instruments.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["coltrane", "ella", "monk", "mingus"]);
    assert!(
        band.instruments
            .iter()
            .all(|i| i.footprint.unwrap() > 0 && i.path.is_some())
    );
    assert!(report.files[0].ends_with("valid/score.lua"));
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    let shown = report.to_string();
    assert!(
        shown.contains("is valid") && shown.contains("coltrane  code"),
        "{shown}"
    );
    while let Ok(e) = events.try_recv() {
        assert!(!matches!(e.kind, EventKind::ModelLoading { .. }), "{e:?}");
    }
}

/// (what is wrong, the score's text, what the error must say)
fn broken_scores() -> Vec<(&'static str, String, &'static str)> {
    let band = |extra: &str| format!("{PREAMBLE}{extra}\nreturn {{ perform = function() end }}");
    vec![
        ("syntax", format!("{PREAMBLE}local = 1\n"), "score.lua:11: <name> expected near '='"),
        ("no table", "return 42".into(), "must end with `return { perform = function(req) ... end }`"),
        ("no perform", "return { play = function() end }".into(), "returned a table without `perform`"),
        (
            "missing model",
            band("band:add(\"x\", { model = \"nowhere/model.gguf\", section = \"code\" })"),
            "score.lua:11: `x`: model file `nowhere/model.gguf` does not exist",
        ),
        (
            "not a gguf",
            band("band:add(\"x\", { model = \"score.lua\", section = \"code\" })"),
            "is not a usable GGUF model",
        ),
        (
            "section typo",
            band("band:add(\"x\", { model = orchestra.rehearsal_model(\"monk\"), section = \"cod\" })"),
            "`cod` is not a section of this band (did you mean `code`?)",
        ),
        (
            "undeclared section",
            band("band:add(\"x\", { model = orchestra.rehearsal_model(\"monk\"), section = \"math\" })"),
            "declare others with `orchestra.band{ sections = {...} }`",
        ),
        (
            "band option typo",
            "local b = orchestra.band { memroy = \"1GiB\" }\nreturn { perform = function() end }".into(),
            "`orchestra.band` has no field `memroy` (did you mean `memory`?)",
        ),
        (
            "member option typo",
            band("band:add(\"x\", { model = orchestra.rehearsal_model(\"monk\"), section = \"code\", contxt = 512 })"),
            "has no field `contxt` (did you mean `context`?)",
        ),
        (
            "too big",
            "local b = orchestra.band { memory = \"1MiB\" }\nb:add(\"x\", { model = orchestra.rehearsal_model(\"monk\"), section = \"code\" })\nreturn { perform = function() end }".into(),
            "but the band's memory is 1.0 MiB",
        ),
        (
            "duplicate",
            band("band:add(\"monk\", { model = orchestra.rehearsal_model(\"monk\"), section = \"analysis\" })"),
            "the band already has an instrument named `monk`",
        ),
        (
            "method name",
            band("band:add(\"lead\", { model = orchestra.rehearsal_model(\"monk\"), section = \"code\" })"),
            "`lead` is a band method",
        ),
        (
            "plays while loading",
            band("band.monk:generate(\"warm up\")"),
            "`monk:generate` cannot play while the score is being checked",
        ),
    ]
}

#[tokio::test]
async fn broken_scores_are_refused_with_the_reason_and_the_line() {
    for (what, text, expected) in broken_scores() {
        let path = write_score(&format!("broken_{}", what.replace(' ', "_")), &text);
        let err = check(ScoreSource::file(&path), options())
            .await
            .expect_err(what);
        let msg = err.to_string();
        assert!(
            msg.contains(expected),
            "{what}: expected “{expected}” in:\n{msg}"
        );
    }
}

#[tokio::test]
async fn declared_sections_are_checked_and_empty_ones_noted() {
    let path = write_score(
        "declared",
        "local b = orchestra.band { sections = { \"math\", \"poetry\" } }\n\
         b:add(\"m\", { model = orchestra.rehearsal_model(\"monk\"), section = \"math\" })\n\
         return { perform = function() return b:lead(\"math\"):generate(\"x\") end }",
    );
    let report = check(ScoreSource::file(&path), options()).await.unwrap();
    assert_eq!(report.bands[0].sections, ["math", "poetry"]);
    assert_eq!(report.notes, ["section `poetry` has no instrument"]);
}

#[tokio::test]
async fn hub_models_not_downloaded_are_a_note_in_check_and_an_error_in_play() {
    let path = write_score(
        "hub_model",
        "local b = orchestra.band {}\n\
         b:add(\"q\", { model = \"hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf\", section = \"code\" })\n\
         return { perform = function() end }",
    );
    let report = check(ScoreSource::file(&path), options()).await.unwrap();
    assert!(
        report.notes[0].contains(&format!("run `orchestra pull {}` first", path.display())),
        "{:?}",
        report.notes
    );
    assert!(report.bands[0].instruments[0].path.is_none());
    let err = Conductor::start(ScoreSource::file(&path), options())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("orchestra pull"), "{err}");
}

#[tokio::test]
async fn the_rehearsal_score_checks_and_plays_each_section() {
    for source in [
        ScoreSource::rehearsal(),
        ScoreSource::file(concat!(env!("CARGO_MANIFEST_DIR"), "/scores/rehearsal.lua")),
    ] {
        let report = check(source.clone(), options()).await.unwrap();
        assert_eq!(report.bands[0].instruments.len(), 4);
        let c = Conductor::start(source, options()).await.unwrap();
        for (prompt, who) in [
            ("write a function that reverses a string", "coltrane"),
            ("write a poem about the sea", "ella"),
            ("why is the sky blue?", "monk"),
            ("please review my essay", "mingus"),
        ] {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let answer = c
                .perform_streaming(Request::prompt(prompt), tx)
                .await
                .unwrap();
            assert_eq!(answer.text, script(who), "{prompt}");
            let mut streamed = String::new();
            while let Ok(p) = rx.try_recv() {
                streamed.push_str(&p);
            }
            assert_eq!(streamed, answer.text, "{prompt}: streamed");
        }
    }
}
