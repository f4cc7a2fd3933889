//! The REPL driven as a user drives it, through the same engine the terminal uses:
//! expressions and statements, a multi-line function, completion, async model calls
//! that stream, Ctrl-C cancelling a generation, and hot reloads.

mod score_support;

use std::time::Duration;

use orchestra::score::{Conductor, ReplOutput, ReplSession, ScoreSource};
use score_support::*;

async fn session(test: &str) -> ReplSession {
    let path = write_score(test, &score_with("return \"ok\""));
    ReplSession::new(start(&path).await.unwrap())
}

fn values(out: ReplOutput) -> Vec<String> {
    match out {
        ReplOutput::Values(v) => v,
        other => panic!("values expected, got {other:?}"),
    }
}

#[tokio::test]
async fn expressions_print_their_value_and_statements_run() {
    let mut s = session("expressions").await;
    assert_eq!(values(s.feed("1 + 2", None).await), ["3"]);
    assert_eq!(values(s.feed("x = 41", None).await), Vec::<String>::new());
    assert_eq!(values(s.feed("x + 1", None).await), ["42"]);
    assert_eq!(
        values(s.feed("\"hi\", nil, true", None).await),
        ["\"hi\"", "nil", "true"]
    );
    assert_eq!(
        values(
            s.feed("{ a = 1, b = { 1, 2 }, [\"with space\"] = 0.5 }", None)
                .await
        ),
        ["{ a = 1, b = { 1, 2 }, [\"with space\"] = 0.5 }"]
    );
    assert_eq!(
        values(s.feed("band.coltrane", None).await),
        ["Model(coltrane: code)"]
    );
    assert_eq!(s.feed("   ", None).await, ReplOutput::Nothing);
}

#[tokio::test]
async fn a_multi_line_function_continues_until_it_is_complete() {
    let mut s = session("multi_line").await;
    assert_eq!(s.prompt(), "> ");
    assert_eq!(s.feed("function twice(text)", None).await, ReplOutput::More);
    assert_eq!(s.prompt(), ">> ");
    assert_eq!(
        s.feed("  local doubled = text .. text", None).await,
        ReplOutput::More
    );
    assert_eq!(s.feed("  return doubled", None).await, ReplOutput::More);
    assert_eq!(values(s.feed("end", None).await), Vec::<String>::new());
    assert_eq!(s.prompt(), "> ");
    assert_eq!(values(s.feed("twice(\"ab\")", None).await), ["\"abab\""]);
    // A table spread over lines, too.
    assert_eq!(s.feed("t = {", None).await, ReplOutput::More);
    assert_eq!(s.feed("  1, 2,", None).await, ReplOutput::More);
    assert_eq!(values(s.feed("}", None).await), Vec::<String>::new());
    assert_eq!(values(s.feed("#t", None).await), ["2"]);
}

#[tokio::test]
async fn completion_offers_globals_fields_and_methods() {
    let s = session("completion").await;
    let cases: &[(&str, usize, &[&str])] = &[
        ("orch", 0, &["orchestra"]),
        ("band.col", 5, &["coltrane"]),
        ("band.coltrane:gen", 14, &["generate"]),
        ("band.coltrane:t", 14, &["tokenize"]),
        ("band.coltrane.sec", 14, &["section"]),
        ("band:le", 5, &["lead"]),
        ("x = band.st", 9, &["stage"]),
        ("band.stage:ev", 11, &["evict"]),
        ("orchestra.sam", 10, &["sampling"]),
        ("orchestra.log.wa", 14, &["warn"]),
        ("string.up", 7, &["upper"]),
        ("retu", 0, &["return"]),
        ("nothing.here", 8, &[]),
    ];
    for (line, start, expected) in cases {
        let (at, got) = s.complete(line, line.len()).await;
        let got: Vec<&str> = got.iter().map(String::as_str).collect();
        assert_eq!(
            (at, got.as_slice()),
            (*start, *expected),
            "completing `{line}`"
        );
    }
    let (_, methods) = s.complete("band.coltrane:", 14).await;
    assert!(
        methods.contains(&"stream".to_string()) && !methods.contains(&"name".to_string()),
        "{methods:?}"
    );
    let (_, members) = s.complete("band.", 5).await;
    for m in ["coltrane", "ella", "monk", "mingus", "lead", "together"] {
        assert!(members.contains(&m.to_string()), "{m} in {members:?}");
    }
}

#[tokio::test]
async fn async_model_calls_just_work_at_the_prompt_and_stream() {
    let mut s = session("async_calls").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let out = values(s.feed("band.coltrane:generate(\"hi\")", Some(tx)).await);
    assert_eq!(out[0], format!("{:?}", script("coltrane")));
    assert!(out[1].contains("finish_reason = \"stop\""), "{out:?}");
    let mut streamed = String::new();
    let mut pieces = 0;
    while let Ok(p) = rx.try_recv() {
        streamed.push_str(&p);
        pieces += 1;
    }
    assert!(pieces > 3, "the answer streamed in pieces");
    assert_eq!(streamed, script("coltrane"));
    // `together` at the prompt, too.
    let out = values(
        s.feed(
            "band:together { function() return band.ella:generate(\"a\") end, function() return band.monk:generate(\"b\") end }",
            None,
        )
        .await,
    );
    assert!(
        out[0].contains(script("ella")) && out[0].contains(script("monk")),
        "{out:?}"
    );
}

#[tokio::test]
async fn errors_show_where_and_the_repl_goes_on() {
    let mut s = session("errors").await;
    match s.feed("error(\"boom\")", None).await {
        ReplOutput::Error(e) => assert!(e.contains("repl:1: boom"), "{e}"),
        other => panic!("an error, got {other:?}"),
    }
    match s.feed("band:lead(\"jazz\")", None).await {
        ReplOutput::Error(e) => assert!(
            e.contains("repl:1: `band:lead`: `jazz` is not a section"),
            "{e}"
        ),
        other => panic!("an error, got {other:?}"),
    }
    match s.feed("local = 1", None).await {
        ReplOutput::Error(e) => assert!(e.contains("repl:1:"), "{e}"),
        other => panic!("a syntax error, got {other:?}"),
    }
    assert_eq!(values(s.feed("1", None).await), ["1"]);
}

#[tokio::test]
async fn ctrl_c_cancels_the_running_generation_not_the_repl() {
    let mut s = session("cancel").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    {
        let feed = s.feed(
            "band.coltrane:generate(\"x\", { max_tokens = 400, ignore_eos = true })",
            Some(tx),
        );
        tokio::pin!(feed);
        // Wait for the first streamed pieces, then "press Ctrl-C": drop the evaluation.
        let mut seen = 0;
        tokio::select! {
            out = &mut feed => panic!("the generation was to be cancelled, it finished: {out:?}"),
            _ = async { while rx.recv().await.is_some() { seen += 1; if seen == 3 { break } } } => {}
        }
    }
    s.reset();
    // The model is free again (no lease held), and the REPL answers.
    let conductor = s.conductor().clone();
    eventually(
        "the cancelled generation to release the model",
        Duration::from_secs(5),
        || {
            let c = conductor.clone();
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async {
                        let mut s = ReplSession::new(c);
                        matches!(s.feed("band.stage:resident()[1].playing", None).await,
                        ReplOutput::Values(v) if v == ["0"])
                    })
            })
            .join()
            .unwrap()
        },
    )
    .await;
    assert_eq!(
        values(
            s.feed(
                "band.coltrane:generate(\"y\", { max_tokens = 2 }) ~= nil",
                None
            )
            .await
        ),
        ["true"]
    );
}

#[tokio::test]
async fn the_repl_picks_up_hot_reloads() {
    let path = write_score(
        "repl_reload",
        &format!("{PREAMBLE}\nreturn {{ marker = \"v1\", perform = function() end }}"),
    );
    let c = start(&path).await.unwrap();
    c.watch().await.unwrap();
    let mut rx = c.reloads();
    let mut s = ReplSession::new(c);
    assert_eq!(values(s.feed("score.marker", None).await), ["\"v1\""]);
    std::fs::write(
        &path,
        format!("{PREAMBLE}\nreturn {{ marker = \"v2\", perform = function() end }}"),
    )
    .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(ev.ok);
    assert_eq!(values(s.feed("score.marker", None).await), ["\"v2\""]);
    assert_eq!(
        orchestra::score::describe_reload(&ev)
            .lines()
            .next()
            .unwrap(),
        format!("[score reloaded: version 2 in {:.0} ms]", ev.ms)
    );
}

#[tokio::test]
async fn the_repl_without_a_score_has_orchestra_and_the_stdlib() {
    let c = Conductor::start(
        ScoreSource::Empty {
            dir: test_dir("no_score"),
        },
        options(),
    )
    .await
    .unwrap();
    assert!(c.is_scoreless());
    let mut s = ReplSession::new(c);
    // Help speaks of the REPL as it is: no score to reload.
    match s.feed(":help", None).await {
        ReplOutput::Message(m) => assert!(m.contains("no score") && !m.contains(":reload"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(s.feed(":reload", None).await, ReplOutput::Error(e) if e.contains("no score to reload"))
    );
    assert_eq!(
        values(
            s.feed("require(\"orchestra.text\").words(\"Blue Train\")", None)
                .await
        ),
        ["{ \"blue\", \"train\" }"]
    );
    assert_eq!(values(s.feed("band", None).await), ["nil"]);
    assert_eq!(
        values(
            s.feed("b = orchestra.band { memory = \"1GiB\" }", None)
                .await
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        values(
            s.feed("b:add(\"ella\", { model = orchestra.rehearsal_model(\"ella\"), section = \"creative\" }):generate(\"x\", { temperature = 0 })", None)
                .await
        )[0],
        format!("{:?}", script("ella"))
    );
}

#[tokio::test]
async fn commands_help_info_reload_and_quit() {
    let mut s = session("commands").await;
    assert!(matches!(s.feed(":help", None).await, ReplOutput::Message(m) if m.contains(":reload")));
    match s.feed(":info", None).await {
        ReplOutput::Message(m) => {
            assert!(
                m.contains("version 1") && m.contains("coltrane (code)"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(s.feed(":reload", None).await, ReplOutput::Message(m) if m.contains("version 2"))
    );
    assert!(matches!(s.feed(":nope", None).await, ReplOutput::Error(_)));
    assert_eq!(s.feed(":quit", None).await, ReplOutput::Quit);
}
