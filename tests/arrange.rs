//! The arrangements of `stdlib/arrange.lua` on real llama.cpp inference with scripted
//! rehearsal models: comping, solos with fallback, review chains, jams, cascades, the
//! standard arrangement, its trace and its narration.

mod arrange_support;

use arrange_support::*;
use serde_json::Value;

const SONNY: &str = "fn reverse(s: &str) -> String { s.chars().rev().collect() }";
const MONK_NOTES: &str = "Watch out for grapheme clusters: reversing chars splits combined accents and emoji, so test with unicode input, an empty string and a single character before calling it done.";
const ELLA_NOTES: &str = "Name it clearly, keep the signature small, and explain in one friendly sentence why iterating over characters is the natural rhythm for this little tune of a function.";
const BIRD_NOTES: &str = "Performance note: the collect call allocates once with the exact capacity, so the whole routine runs in linear time; no unsafe tricks or manual byte shuffling are needed here.";

/// The band most tests use: a soloist per section and scripted reviewers.
fn members() -> String {
    [
        member("sonny", "code", &model("sonny", SONNY)),
        member("ella", "creative", &model("ella", ELLA_NOTES)),
        member("monk", "analysis", &model("monk", MONK_NOTES)),
        member("bird", "analysis", &model("bird", BIRD_NOTES)),
        member("rejecter", "review", &model("rejecter", REJECT)),
        member("approver", "review", &model("approver", APPROVE)),
    ]
    .concat()
}

const SECTIONS: &[&str] = &["code", "creative", "analysis", "review"];

#[tokio::test]
async fn comp_players_play_at_the_same_time_and_their_notes_reach_the_soloist() {
    let text = score(
        SECTIONS,
        &members(),
        r#"local players = { band.monk, band.ella, band.bird }
        -- On stage first, so the generations (not the loads) are what overlaps.
        orchestra.together { function() return band.monk:load() end, function() return band.ella:load() end,
                             function() return band.bird:load() end, function() return band.sonny:load() end }
        local notes = arrange.comp(players, req, { max_tokens = 300, generate = { ignore_eos = true } })
        local plain = assert(arrange.solo(band, "code", req, { record = false, announce = false }))
        local draft = assert(arrange.solo(band, "code", req, { notes = notes, note_chars = 200 }))
        local t = trace.of(req)
        return {
          notes = notes,
          comp = t.comp,
          plain_prompt = t.plays[4].prompt_tokens,
          noted_prompt = t.solo.prompt_tokens,
          block_tokens = #band.sonny:tokenize(arrange.notes_text(notes, 200)),
          text = draft.text,
        }"#,
    );
    let (answer, events) = play("comp", &text, "write a function that reverses a string").await;
    let out = &answer.data;
    let notes = out["notes"].as_array().expect("a list of notes");
    let players: Vec<&str> = notes
        .iter()
        .map(|n| n["player"].as_str().unwrap())
        .collect();
    assert_eq!(players, ["monk", "ella", "bird"], "{out:#}");
    for (n, script) in notes.iter().zip([MONK_NOTES, ELLA_NOTES, BIRD_NOTES]) {
        assert!(
            n["text"].as_str().unwrap().starts_with(script),
            "each note is what its player said: {n:#}"
        );
        assert_eq!(n["tokens"], 300, "the token budget holds: {n:#}");
    }
    assert_eq!(out["comp"]["max_tokens"], 300);

    // The three players were generating at the same time.
    let s: Vec<(f64, f64)> = ["monk", "ella", "bird"]
        .iter()
        .map(|m| {
            let s = spans(&events, m);
            assert_eq!(s.len(), 1, "{m} played once");
            s[0]
        })
        .collect();
    for i in 0..3 {
        for j in i + 1..3 {
            let ((a0, a1), (b0, b1)) = (s[i], s[j]);
            assert!(
                a0 < b1 && b0 < a1,
                "comp players {i} and {j} overlap in time: {a0}..{a1} and {b0}..{b1}"
            );
        }
    }

    // The notes reached the soloist's prompt: it grew by the notes' tokens.
    let plain = out["plain_prompt"].as_i64().unwrap();
    let noted = out["noted_prompt"].as_i64().unwrap();
    let block = out["block_tokens"].as_i64().unwrap();
    assert!(block > 50, "{out:#}");
    assert!(
        (noted - plain - block).abs() <= 4,
        "the soloist's prompt grew by the notes ({block} tokens): {plain} -> {noted}"
    );
    assert_eq!(out["text"], SONNY);
}

#[tokio::test]
async fn a_comp_budget_is_shared_out_among_the_players() {
    let text = score(
        SECTIONS,
        &members(),
        r#"local notes = arrange.comp({ band.monk, band.ella, band.bird }, req, { budget = 30, generate = { ignore_eos = true } })
        return { comp = trace.of(req).comp }"#,
    );
    let (answer, _) = play("comp_budget", &text, "go").await;
    let comp = &answer.data["comp"];
    assert_eq!(comp["max_tokens"], 10, "{comp:#}");
    for n in comp["notes"].as_array().unwrap() {
        assert_eq!(n["tokens"], 10, "{n:#}");
    }
}

#[tokio::test]
async fn the_revise_loop_stops_at_its_bound() {
    let text = score(
        SECTIONS,
        &members(),
        r#"local draft = assert(arrange.solo(band, "code", req))
        draft = arrange.review(band.rejecter, draft, { rounds = tonumber(req.prompt) })
        return arrange.answer(req, draft)"#,
    );
    let c = start("revise_bound", &text).await.unwrap();
    // Every revision is reviewed again, the last one included.
    for (rounds, reviews, revisions) in [(0, 1, 0), (1, 2, 1), (2, 3, 2), (3, 4, 3)] {
        let (answer, events) = perform(&c, &rounds.to_string()).await;
        let t = &answer.data["trace"];
        assert_eq!(len(&t["reviews"]), reviews, "rounds = {rounds}: {t:#}");
        assert_eq!(len(&t["revisions"]), revisions, "rounds = {rounds}: {t:#}");
        for r in t["reviews"].as_array().unwrap() {
            assert_eq!(r["verdict"], "revise");
            assert_eq!(strings(&r["problems"]), ["too short", "no tests"]);
        }
        let revise_events = custom(&events)
            .iter()
            .filter(|(n, _)| n == "revise")
            .count();
        assert_eq!(revise_events, revisions, "rounds = {rounds}");
        assert_eq!(answer.text, SONNY);
        assert_eq!(answer.data["verdict"], "revise", "the last verdict stands");
        assert!(answer.data["unreviewed"].is_null());
    }
}

#[tokio::test]
async fn an_approving_reviewer_ends_the_review_at_once() {
    let text = score(
        SECTIONS,
        &members(),
        r#"local draft = assert(arrange.solo(band, "code", req))
        return arrange.answer(req, arrange.review(band.approver, draft, { rounds = 3 }))"#,
    );
    let (answer, events) = play("approve", &text, "reverse a string").await;
    let t = &answer.data["trace"];
    assert_eq!(len(&t["reviews"]), 1, "{t:#}");
    assert_eq!(t["reviews"][0]["verdict"], "approve");
    assert_eq!(t["reviews"][0]["reviewer"], "approver");
    assert_eq!(len(&t["revisions"]), 0);
    assert!(narration(&events).contains(&"Approver approves.".to_string()));
}

#[tokio::test]
async fn the_reviewer_is_never_the_author() {
    let text = score(
        SECTIONS,
        &members(),
        r#"local case = req.prompt
        local draft
        if case == "reviewer is the author" then
          draft = assert(arrange.solo(band, band.sonny, req))
          draft = arrange.review(band.sonny, draft, { rounds = 1 })
        elseif case == "the reviewer wrote the draft" then
          draft = assert(arrange.solo(band, band.rejecter, req))
          draft = arrange.review(nil, draft, { rounds = 1 })
        elseif case == "picked before the solo" then
          local reviewer = band:reviewer(band.sonny)
          draft = assert(arrange.solo(band, "review", req))   -- the review section's lead plays
          draft = arrange.review(reviewer, draft, { rounds = 1 })
        else -- a cascade whose given reviewer is the first player
          draft = assert(arrange.cascade(band, { band.rejecter, band.sonny }, req, { reviewer = band.rejecter }))
        end
        return arrange.answer(req, draft)"#,
    );
    let c = start("never_author", &text).await.unwrap();
    for (case, author, reviewer) in [
        ("reviewer is the author", "sonny", "rejecter"),
        ("the reviewer wrote the draft", "rejecter", "approver"),
        ("picked before the solo", "rejecter", "approver"),
        ("cascade", "rejecter", "approver"),
    ] {
        let (answer, events) = perform(&c, case).await;
        let t = &answer.data["trace"];
        let reviews = t["reviews"].as_array().expect("at least one review");
        for r in reviews {
            assert_ne!(r["reviewer"], r["author"], "{case}: {t:#}");
        }
        assert_eq!(reviews[0]["author"], author, "{case}: {t:#}");
        assert_eq!(reviews[0]["reviewer"], reviewer, "{case}: {t:#}");
        for (name, data) in custom(&events) {
            if name == "review" {
                assert_ne!(data["reviewer"], data["author"], "{case}: {data}");
            }
        }
    }
}

#[tokio::test]
async fn a_reviewer_scripted_to_reject_makes_the_cascade_escalate() {
    let members = [
        member("sprout", "creative", &model("sprout", "Short answer.")),
        member(
            "oak",
            "analysis",
            &model("oak", "A longer, careful answer from the big model."),
        ),
        member("rejecter", "review", &model("rejecter", REJECT)),
        member("approver", "review", &model("approver", APPROVE)),
    ]
    .concat();
    let text = score(
        SECTIONS,
        &members,
        r#"local draft = assert(arrange.cascade(band, { band.sprout, "analysis" }, req, { reviewer = band[req.prompt] }))
        return arrange.answer(req, draft)"#,
    );
    let c = start("cascade", &text).await.unwrap();

    let (answer, events) = perform(&c, "rejecter").await;
    assert_eq!(answer.text, "A longer, careful answer from the big model.");
    let t = &answer.data["trace"];
    assert_eq!(t["cascade"]["escalations"], 1, "{t:#}");
    assert_eq!(t["cascade"]["steps"][0]["verdict"], "revise");
    assert_eq!(t["cascade"]["steps"][1]["verdict"], "final");
    assert_eq!(answer.data["player"], "oak");
    let escalations: Vec<Value> = custom(&events)
        .into_iter()
        .filter(|(n, _)| n == "escalate")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(escalations.len(), 1);
    assert_eq!(escalations[0]["from"], "sprout");
    assert_eq!(escalations[0]["to"], "oak");
    assert!(narration(&events).contains(&"Sprout hands it over to Oak.".to_string()));

    let (answer, events) = perform(&c, "approver").await;
    assert_eq!(answer.text, "Short answer.");
    assert_eq!(answer.data["trace"]["cascade"]["escalations"], 0);
    assert!(!custom(&events).iter().any(|(n, _)| n == "escalate"));
}

#[tokio::test]
async fn jam_merges_every_section() {
    let text = score(
        SECTIONS,
        &members(),
        r#"local draft = assert(arrange.jam(band, req, { leader = "analysis" }))
        return arrange.answer(req, draft)"#,
    );
    let (answer, events) = play("jam", &text, "reverse a string, and sing about it").await;
    let t = &answer.data["trace"];
    let jam = &t["jam"];
    // One player per section (review only listens), the analysis lead merges.
    assert_eq!(strings(&jam["players"]), ["sonny", "ella", "monk"], "{t:#}");
    let parts = jam["parts"].as_array().unwrap();
    let sections: Vec<&str> = parts
        .iter()
        .map(|p| p["section"].as_str().unwrap())
        .collect();
    assert_eq!(sections, ["code", "creative", "analysis"]);
    assert_eq!(jam["leader"], "monk");
    assert_eq!(answer.text, MONK_NOTES, "the leader's merge is the answer");
    // Every part went into the leader's prompt.
    let part_tokens: i64 = parts.iter().map(|p| p["tokens"].as_i64().unwrap()).sum();
    let merge_prompt = jam["merge"]["prompt_tokens"].as_i64().unwrap();
    assert!(
        merge_prompt > part_tokens,
        "the merge prompt ({merge_prompt} tokens) holds all parts ({part_tokens} tokens)"
    );
    let lines = narration(&events);
    assert!(
        lines.contains(&"Jam session: Sonny, Ella and Monk all play.".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"Monk brings it all together.".to_string()));
}

#[tokio::test]
async fn a_failing_model_falls_back_to_the_next_instrument_of_its_section() {
    let doomed = doomed_copy("doomed", "I will never play.", "fallback");
    let members = [
        member("doomed", "code", &doomed),
        member("sonny", "code", &model("sonny", SONNY)),
        // A context too small for any prompt: every generation errors.
        format!(
            "band:add(\"cramped\", {{ model = {}, section = \"creative\", context = 8, slots = 1 }})\n",
            lua_path(&model("cramped", "Never heard."))
        ),
        member("ella", "creative", &model("ella", ELLA_NOTES)),
        member("rejecter", "review", &model("rejecter", REJECT)),
    ]
    .concat();
    let text = score(
        SECTIONS,
        &members,
        r#"return arrange.answer(req, assert(arrange.solo(band, req.prompt, req)))"#,
    );
    let c = start("fallback", &text).await.unwrap();
    // The file disappears after the score loaded: loading it fails.
    std::fs::remove_file(&doomed).unwrap();
    for (section, failed, stand_in, said) in [
        ("code", "doomed", "sonny", SONNY),
        ("creative", "cramped", "ella", ELLA_NOTES),
    ] {
        let (answer, events) = perform(&c, section).await;
        assert_eq!(answer.text, said, "{section}");
        let t = &answer.data["trace"];
        assert_eq!(t["solo"]["player"], stand_in, "{t:#}");
        let f = &t["fallbacks"][0];
        assert_eq!(f["from"], failed, "{t:#}");
        assert_eq!(f["to"], stand_in);
        assert!(!f["error"].as_str().unwrap().is_empty());
        let line = format!(
            "{} dropped out; {} steps in.",
            orchestra::narrate::stage_name(failed),
            orchestra::narrate::stage_name(stand_in)
        );
        assert!(narration(&events).contains(&line), "{section}");
    }
}

#[tokio::test]
async fn a_section_where_everyone_fails_returns_nil_and_the_reasons() {
    let members = [format!(
        "band:add(\"cramped\", {{ model = {}, section = \"code\", context = 8, slots = 1 }})\n",
        lua_path(&model("cramped", "Never heard."))
    )]
    .concat();
    let text = score(
        SECTIONS,
        &members,
        r#"local draft, err = arrange.solo(band, "code", req)
        return { draft = draft, err = err }"#,
    );
    let (answer, _) = play("all_fail", &text, "write some code please").await;
    assert!(answer.data["draft"].is_null());
    let err = answer.data["err"].as_str().unwrap();
    assert!(err.contains("section `code`"), "{err}");
    assert!(err.contains("cramped"), "{err}");
}

/// The standard arrangement with a reviewer that asks for one revision.
fn standard() -> String {
    score(
        SECTIONS,
        &members(),
        r#"local router = route.rules {
          { when = route.keywords { "function", "rust", "code" }, section = "code" },
          { when = route.keywords { "poem", "song" }, section = "creative" },
          { otherwise = "analysis" },
        }
        return arrange.perform(band, req, { router = router, comp = { max_tokens = 24 }, review = { reviewer = band.rejecter, rounds = 1 } })"#,
    )
}

#[tokio::test]
async fn perform_routes_comps_solos_and_reviews_with_a_full_trace() {
    let (answer, _) = play(
        "perform",
        &standard(),
        "write a rust function that reverses a string",
    )
    .await;
    assert_eq!(answer.text, SONNY);
    assert!(answer.streamed, "the answer is written to the request");
    let t = &answer.data["trace"];
    assert_eq!(t["request"], "write a rust function that reverses a string");
    let route = &t["route"];
    assert_eq!(route["section"], "code");
    assert_eq!(route["kind"], "keywords");
    assert_eq!(route["rule"], 1);
    assert_eq!(strings(&route["matched"]), ["function", "rust"]);
    assert!(route["us"].as_f64().unwrap() > 0.0);
    // The leads of the other sections comp (review only reviews).
    assert_eq!(strings(&t["comp"]["players"]), ["ella", "monk"], "{t:#}");
    assert_eq!(len(&t["comp"]["notes"]), 2);
    assert_eq!(t["solo"]["player"], "sonny");
    assert_eq!(t["solo"]["notes"], 2);
    assert_eq!(t["reviews"][0]["reviewer"], "rejecter");
    assert_eq!(t["reviews"][0]["verdict"], "revise");
    assert_eq!(t["revisions"][0]["player"], "sonny");
    assert_eq!(t["answer"]["player"], "sonny");
    assert_eq!(t["answer"]["revisions"], 1);

    // Tempo and swing per instrument, in order of entrance.
    let instruments = t["instruments"].as_array().unwrap();
    let names: Vec<&str> = instruments
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ella", "monk", "sonny", "rejecter"], "{t:#}");
    for i in instruments {
        let tempo = i["tempo"].as_f64().unwrap();
        let swing = i["swing"].as_f64().unwrap();
        assert!(tempo > 0.0, "{i}");
        assert!(swing > 0.0 && swing <= 1.0, "{i}");
    }
    let sonny = &instruments[2];
    assert_eq!(strings(&sonny["roles"]), ["solo", "revise"]);
    assert_eq!(sonny["calls"], 2);
    // The timeline holds every announcement in order.
    let timeline: Vec<&str> = t["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        timeline,
        [
            "routed", "comp", "solo", "review", "verdict", "revise", "review", "verdict"
        ],
        "the revision is reviewed too"
    );
}

#[tokio::test]
async fn narration_tells_the_story_of_the_arrangement() {
    let (_, events) = play(
        "narration",
        &standard(),
        "write a rust function that reverses a string",
    )
    .await;
    let lines: Vec<String> = narration(&events)
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
}

#[tokio::test]
async fn model_solo_is_the_arrangement_as_a_method() {
    let text = score(
        SECTIONS,
        &members(),
        r#"local draft = assert(band.sonny:solo(req))
        return { text = draft.text, player = draft.player }"#,
    );
    let (answer, _) = play("model_solo", &text, "go").await;
    assert_eq!(answer.data["text"], SONNY);
    assert_eq!(answer.data["player"], "sonny");
}

#[tokio::test]
async fn without_a_review_the_solo_streams_as_it_plays() {
    let text = score(
        SECTIONS,
        &members(),
        r#"return arrange.perform(band, req, { section = "code", comp = false, review = false })"#,
    );
    let c = start("streams", &text).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let answer = c
        .perform_streaming(orchestra::score::Request::prompt("go"), tx)
        .await
        .unwrap();
    let mut pieces = Vec::new();
    while let Ok(p) = rx.try_recv() {
        pieces.push(p);
    }
    assert!(pieces.len() > 5, "token by token: {pieces:?}");
    assert_eq!(pieces.concat(), SONNY, "written once, not again at the end");
    assert_eq!(answer.text, SONNY);
    assert!(answer.data["trace"]["reviews"].is_null());
    assert!(answer.data["trace"]["comp"].is_null());
}

#[tokio::test]
async fn the_rehearsal_score_plays_the_whole_arrangement_offline() {
    let c =
        orchestra::score::Conductor::start(orchestra::score::ScoreSource::rehearsal(), options())
            .await
            .unwrap();
    for (prompt, section, soloist, comps) in [
        (
            "write a function that reverses a string",
            "code",
            "coltrane",
            ["ella", "monk"],
        ),
        (
            "a poem about the rain",
            "creative",
            "ella",
            ["coltrane", "monk"],
        ),
        (
            "why is the sky blue?",
            "analysis",
            "monk",
            ["coltrane", "ella"],
        ),
    ] {
        let (answer, events) = perform(&c, prompt).await;
        assert_eq!(answer.text, script(soloist), "{prompt}");
        let t = &answer.data["trace"];
        assert_eq!(t["route"]["section"], section, "{prompt}: {t:#}");
        assert_eq!(strings(&t["comp"]["players"]), comps, "{prompt}");
        assert_eq!(len(&t["comp"]["notes"]), 2, "{prompt}");
        assert_eq!(t["solo"]["player"], soloist);
        assert_eq!(t["reviews"][0]["reviewer"], "mingus");
        assert_eq!(t["reviews"][0]["author"], soloist);
        assert!(len(&t["instruments"]) >= 4, "{t:#}");
        let stage = orchestra::narrate::stage_name(soloist);
        let lines = narration(&events);
        for want in [
            format!("This one is for the {section} section."),
            format!("{stage} is taking a solo."),
            format!("Mingus is reviewing {stage}'s solo."),
        ] {
            assert!(lines.contains(&want), "{prompt}: {want:?} in {lines:?}");
        }
    }
}

#[tokio::test]
async fn verdicts_are_read_even_when_cut_short() {
    let cases: &[(&str, &str, &[&str], &str)] = &[
        (r#"{"verdict":"approve"}"#, "approve", &[], ""),
        (
            r#"{"verdict": "revise", "problems": ["a", "b"]}"#,
            "revise",
            &["a", "b"],
            "",
        ),
        (
            r#"{"verdict":"reject","problems":["x"]}"#,
            "revise",
            &["x"],
            "",
        ),
        (
            r#"{"verdict":"revise","problems":["too short","no te"#,
            "revise",
            &["too short"],
            "truncated",
        ),
        // Not a verdict: never an approval.
        (r#"{"verdict":"appr"#, "unreadable", &[], "unreadable"),
        ("Looks good to me!", "unreadable", &[], "unreadable"),
    ];
    let replies: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let text = score(
        SECTIONS,
        "",
        &format!(
            "local out = {{}}\nfor i, r in ipairs(orchestra.json.decode({:?})) do out[i] = arrange.read_verdict(r) end\nreturn {{ verdicts = out }}",
            serde_json::to_string(&replies).unwrap()
        ),
    );
    let (answer, _) = play("verdicts", &text, "x").await;
    for (i, (reply, verdict, problems, flag)) in cases.iter().enumerate() {
        let v = &answer.data["verdicts"][i];
        assert_eq!(v["verdict"], *verdict, "{reply}: {v}");
        assert_eq!(strings(&v["problems"]), *problems, "{reply}: {v}");
        if !flag.is_empty() {
            assert_eq!(v[*flag], true, "{reply}: {v}");
        }
    }
}

/// Warnings of the scores in this binary, as `tracing` printed them.
fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter("orchestra::score=warn")
            .with_writer(move || LogWriter(writer.clone()))
            .with_ansi(false)
            .init();
        buf
    })
    .clone()
}

struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured warning lines that mention `needle` and come from `test`'s score.
fn warnings(test: &str, needle: &str) -> Vec<String> {
    let logs = captured_logs();
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    text.lines()
        .filter(|l| l.contains(needle) && l.contains(&format!("{test}/score.lua:")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_reviewer_reads_the_final_revision() {
    let text = score(
        SECTIONS,
        &members(),
        r#"local draft = assert(arrange.solo(band, "code", req))
        local first = draft.text
        local plays = trace.of(req).plays
        -- The revision is cut to four tokens, so it differs from the first draft.
        draft = arrange.review(band.rejecter, draft, { rounds = 1, revise_tokens = 4 })
        local out = arrange.answer(req, draft)
        out.first = first
        out.first_tokens = #band.rejecter:tokenize(first)
        out.final_tokens = #band.rejecter:tokenize(draft.text)
        out.plays = plays
        return out"#,
    );
    let (answer, _) = play("final_revision", &text, "reverse a string").await;
    let out = &answer.data;
    let t = &out["trace"];
    let first = out["first"].as_str().unwrap();
    assert_eq!(first, SONNY);
    assert_ne!(answer.text, SONNY, "the revision is the answer: {out:#}");
    assert!(SONNY.starts_with(&answer.text), "{}", answer.text);
    let reviews = t["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 2, "the revision was reviewed: {t:#}");
    // What the reviewer read the second time is the revision: its prompt shrank by
    // exactly the tokens the revision dropped.
    let p1 = reviews[0]["prompt_tokens"].as_i64().unwrap();
    let p2 = reviews[1]["prompt_tokens"].as_i64().unwrap();
    let dropped = out["first_tokens"].as_i64().unwrap() - out["final_tokens"].as_i64().unwrap();
    assert!(dropped > 5, "{out:#}");
    assert!(
        (p1 - p2 - dropped).abs() <= 2,
        "the second review's prompt ({p2} tokens) holds the revision, not the first draft ({p1} tokens, {dropped} more in the draft)"
    );
    let reviewer_prompts: Vec<i64> = out["plays"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["role"] == "review")
        .map(|p| p["prompt_tokens"].as_i64().unwrap())
        .collect();
    assert_eq!(reviewer_prompts, [p1, p2], "llama.cpp got these prompts");
    assert_eq!(
        out["verdict"], "revise",
        "the verdict is the one on the final text"
    );
}

#[tokio::test]
async fn an_unreadable_verdict_is_asked_again_then_reported_never_approved() {
    let members = [
        member("sonny", "code", &model("sonny", SONNY)),
        member("mumbler", "review", &model("mumbler", "Looks good to me!")),
    ]
    .concat();
    let text = score(
        SECTIONS,
        &members,
        r#"local draft = assert(arrange.solo(band, "code", req))
        local plays = trace.of(req).plays
        -- No grammar: the reviewer says what it likes.
        draft = arrange.review(band.mumbler, draft, { rounds = 2, grammar = false })
        local out = arrange.answer(req, draft)
        out.plays = plays
        return out"#,
    );
    let (answer, events) = play("unreadable", &text, "reverse a string").await;
    let out = &answer.data;
    let t = &out["trace"];
    let reviews = t["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 1, "{t:#}");
    let v = &reviews[0];
    assert_eq!(v["verdict"], "unreadable", "not an approval: {v:#}");
    assert_eq!(v["unreadable"], true);
    assert_eq!(v["retried"], true, "asked once more: {v:#}");
    assert_eq!(v["raw"], "Looks good to me!");
    assert_eq!(len(&t["revisions"]), 0, "nothing to revise");
    assert_eq!(out["unreviewed"], true, "{out:#}");
    assert_eq!(out["verdict"], "unreadable");
    assert_eq!(t["answer"]["unreviewed"], true);
    // The reviewer played twice, the second time with a stricter, longer instruction.
    let prompts: Vec<i64> = out["plays"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["player"] == "mumbler")
        .map(|p| p["prompt_tokens"].as_i64().unwrap())
        .collect();
    assert_eq!(prompts.len(), 2, "{out:#}");
    assert!(prompts[1] > prompts[0] + 10, "stricter: {prompts:?}");
    let lines = narration(&events);
    for want in [
        "Mumbler is asked again for a verdict.",
        "Mumbler gives no readable verdict; it goes out unreviewed.",
    ] {
        assert!(lines.contains(&want.to_string()), "{lines:?}");
    }
    assert!(!lines.contains(&"Mumbler approves.".to_string()));
    let rendered = orchestra::trace::render_trace(t);
    assert!(rendered.contains("not approved"), "{rendered}");
    assert!(rendered.contains(", unreviewed"), "{rendered}");
}

#[tokio::test]
async fn a_verdict_cut_short_is_read_when_asked_again_with_more_room() {
    let text = score(
        SECTIONS,
        &members(),
        r#"local draft = assert(arrange.solo(band, "code", req))
        -- Three tokens end the verdict before its value: unreadable, then asked again.
        return arrange.answer(req, arrange.review(band.approver, draft, { max_tokens = 3 }))"#,
    );
    let (answer, _) = play("cut_short", &text, "reverse a string").await;
    let t = &answer.data["trace"];
    let v = &t["reviews"][0];
    assert_eq!(v["verdict"], "approve", "{t:#}");
    assert_eq!(v["retried"], true);
    let first = v["first_reply"].as_str().unwrap();
    assert!(APPROVE.starts_with(first) && first != APPROVE, "{first}");
    assert!(answer.data["unreviewed"].is_null());
    assert_eq!(answer.data["verdict"], "approve");
}

#[tokio::test]
async fn both_review_argument_orders_work_and_the_old_one_warns_once() {
    let _ = captured_logs();
    let text = score(
        SECTIONS,
        &members(),
        r#"local function reviewed(f)
          local d = assert(arrange.solo(band, "code", req, { record = false }))
          d = f(d)
          return { reviewer = d.verdict.reviewer, verdict = d.verdict.verdict }
        end
        return {
          old = reviewed(function(d) return arrange.review(d, band.approver, { rounds = 1 }) end),
          old_again = reviewed(function(d) return arrange.review(d, band.approver, { rounds = 1 }) end),
          new = reviewed(function(d) return arrange.review(band.approver, d, { rounds = 1 }) end),
          old_picked = reviewed(function(d) return arrange.review(d, nil, { rounds = 0 }) end),
          new_picked = reviewed(function(d) return arrange.review(nil, d, { rounds = 0 }) end),
        }"#,
    );
    let (answer, _) = play("review_orders", &text, "reverse a string").await;
    let out = &answer.data;
    for case in ["old", "old_again", "new"] {
        assert_eq!(out[case]["reviewer"], "approver", "{case}: {out:#}");
        assert_eq!(out[case]["verdict"], "approve", "{case}: {out:#}");
    }
    // Picked from the review section: the first reviewer there.
    assert_eq!(out["old_picked"]["reviewer"], "rejecter", "{out:#}");
    assert_eq!(out["new_picked"]["reviewer"], "rejecter", "{out:#}");
    let warned = warnings(
        "review_orders",
        "deprecated: `arrange.review(draft, reviewer, opts)`",
    );
    assert_eq!(warned.len(), 1, "one warning for the old order: {warned:?}");
    assert!(
        warned[0].contains("write `arrange.review(reviewer, draft, opts)`"),
        "{warned:?}"
    );
}

#[tokio::test]
async fn except_leaves_out_models_names_and_sections() {
    let _ = captured_logs();
    // A module-level use of the old spelling: `orchestra check` notes it.
    let members = format!(
        "{}local early = band:reviewer {{ [\"not\"] = band.rejecter }}\n",
        members()
    );
    let text = score(
        SECTIONS,
        &members,
        r#"local function names(list) local t = {} for i, m in ipairs(list) do t[i] = m.name end return t end
        return {
          except_model = names(band:players { except = band.sonny }),
          except_section = names(band:players { except = "analysis" }),
          except_mixed = names(band:players { except = { "review", band.monk, "ella" } }),
          in_section = names(band:players { section = "analysis", except = "monk" }),
          leads = names(arrange.leads(band, { except = { "review", band.monk } })),
          leads_set = names(arrange.leads(band, { except = { review = true, code = true } })),
          arrange_players = names(arrange.players(band, { except = "review", section = "analysis" })),
          reviewer_short = band:reviewer(band.rejecter).name,
          reviewer_list = band:reviewer({ band.rejecter, "sonny" }).name,
          reviewer_opts = band:reviewer { except = { "rejecter" } }.name,
          reviewer_section = band:reviewer { except = "review" }.name,
          reviewer_none = band:reviewer { except = { "code", "creative", "analysis", "review" } } == nil,
          others = names(band:others(band.sonny)),
          old_reviewer = band:reviewer { ["not"] = band.rejecter }.name,
          old_players = names(arrange.players(band, { ["not"] = { band.sonny, "ella" } })),
          old_leads = names(arrange.leads(band, { except = "review", ["not"] = band.monk })),
          early = early.name,
        }"#,
    );
    let (answer, _) = play("except", &text, "x").await;
    let out = &answer.data;
    let want = serde_json::json!({
        "except_model": ["ella", "monk", "bird", "rejecter", "approver"],
        "except_section": ["sonny", "ella", "rejecter", "approver"],
        "except_mixed": ["sonny", "bird"],
        "in_section": ["bird"],
        "leads": ["sonny", "ella", "bird"],
        "leads_set": ["ella", "monk"],
        "arrange_players": ["monk", "bird"],
        "reviewer_short": "approver",
        "reviewer_list": "approver",
        "reviewer_opts": "approver",
        "reviewer_section": "sonny",
        "reviewer_none": true,
        "others": ["ella", "monk", "bird", "rejecter", "approver"],
        "old_reviewer": "approver",
        "old_players": ["monk", "bird", "rejecter", "approver"],
        "old_leads": ["sonny", "ella", "bird"],
        "early": "approver",
    });
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&out[k], v, "{k}: {out:#}");
    }
    // Each old spelling warns once, at the score's line.
    for needle in [
        "deprecated: `band:reviewer { [\"not\"] = ... }`",
        "deprecated: `arrange.players(band, { [\"not\"] = ... })`",
        "deprecated: `arrange.leads(band, { [\"not\"] = ... })`",
    ] {
        let warned = warnings("except", needle);
        assert_eq!(warned.len(), 1, "{needle}: {warned:?}");
        assert!(warned[0].contains("except = ..."), "{warned:?}");
    }
    let report = orchestra::score::check(
        orchestra::score::ScoreSource::file(test_dir("except").join("score.lua")),
        options(),
    )
    .await
    .unwrap();
    assert!(
        report.notes.iter().any(
            |n| n.contains("deprecated: `band:reviewer { [\"not\"] = ... }`")
                && n.contains("score.lua:")
        ),
        "{:?}",
        report.notes
    );
}

#[tokio::test]
async fn router_and_embedding_instruments_never_lead_comp_or_review() {
    let embedder = |name: &str, section: &str| {
        format!(
            "band:add({name:?}, {{ model = {}, section = {section:?}, embeddings = true, context = 128 }})\n",
            lua_path(&model(name, "Listening closely."))
        )
    };
    // In band order the routers come first everywhere they could be picked.
    let members = [
        embedder("ears", "code"),
        member("basie", "routing", &model("basie", "code")),
        embedder("duke", "review"),
        member("tuner", "tuning", &model("tuner", "A440.")),
        member("sonny", "code", &model("sonny", SONNY)),
        member("monk", "analysis", &model("monk", MONK_NOTES)),
        member("ella", "creative", &model("ella", ELLA_NOTES)),
        "orchestra.offstage.tuning = true\n".to_string(),
    ]
    .concat();
    let text = score(
        &[
            "code", "creative", "analysis", "review", "routing", "tuning",
        ],
        &members,
        r#"local function names(list) local t = {} for i, m in ipairs(list) do t[i] = m.name end return t end
        local function fails(f) local ok, err = pcall(f) return not ok and tostring(err) or "no error" end
        if req.prompt == "perform" then
          return arrange.perform(band, req, { section = "code", comp = { max_tokens = 8 }, review = { rounds = 0, max_tokens = 16 } })
        end
        local plays = {}
        for _, m in ipairs(band:members()) do plays[m.name] = m.plays end
        return {
          lead = band:lead("code").name,
          arrange_lead = arrange.lead(band, "code").name,
          lead_routing = fails(function() return band:lead("routing") end),
          lead_tuning = fails(function() return band:lead("tuning") end),
          lead_review = fails(function() return band:lead("review") end),
          arrange_lead_routing = arrange.lead(band, "routing") == nil,
          arrange_lead_review = arrange.lead(band, "review") == nil,
          reviewer = band:reviewer().name,
          reviewer_for_sonny = band:reviewer(band.sonny).name,
          players = names(band:players()),
          arrange_players = names(arrange.players(band)),
          leads = names(arrange.leads(band)),
          comp = (function()
            local t = {}
            for i, n in ipairs(arrange.comp(band:members(), "x", { max_tokens = 2 })) do t[i] = n.player end
            return t
          end)(),
          plays = plays,
          playable = arrange.playable(band.basie) == band.basie.plays and arrange.playable(band.sonny) == band.sonny.plays,
        }"#,
    );
    let c = start("who_plays", &text).await.unwrap();
    let (answer, _) = perform(&c, "rules").await;
    let out = &answer.data;
    assert_eq!(
        out["lead"], "sonny",
        "the embedder before it never leads: {out:#}"
    );
    assert_eq!(out["arrange_lead"], "sonny");
    for k in ["lead_routing", "lead_tuning", "lead_review"] {
        assert!(
            out[k].as_str().unwrap().contains("only route"),
            "{k}: {out:#}"
        );
    }
    assert_eq!(out["arrange_lead_routing"], true);
    assert_eq!(out["arrange_lead_review"], true);
    assert_eq!(
        out["reviewer"], "sonny",
        "the review section's embedder never reviews"
    );
    assert_eq!(out["reviewer_for_sonny"], "monk");
    let players = serde_json::json!(["sonny", "monk", "ella"]);
    assert_eq!(out["players"], players);
    assert_eq!(out["arrange_players"], players);
    assert_eq!(out["leads"], serde_json::json!(["sonny", "ella", "monk"]));
    assert_eq!(
        out["comp"],
        serde_json::json!(["sonny", "monk", "ella"]),
        "only players comp"
    );
    assert_eq!(
        out["plays"],
        serde_json::json!({ "ears": false, "basie": false, "duke": false, "tuner": false,
                            "sonny": true, "monk": true, "ella": true })
    );
    assert_eq!(out["playable"], true);

    // The whole arrangement: the routers stay off stage.
    let (answer, _) = perform(&c, "perform").await;
    let t = &answer.data["trace"];
    assert_eq!(t["solo"]["player"], "sonny", "{t:#}");
    assert_eq!(strings(&t["comp"]["players"]), ["ella", "monk"], "{t:#}");
    assert_eq!(t["reviews"][0]["reviewer"], "monk", "{t:#}");
    for i in t["instruments"].as_array().unwrap() {
        let name = i["name"].as_str().unwrap();
        assert!(
            ["sonny", "monk", "ella"].contains(&name),
            "{name} played: {t:#}"
        );
    }
}

/// Who a shipped score's instruments become in [`every_shipped_score_plays`]: scripted
/// stand-ins that say who they are (reviewers approve, routers name a section).
fn stand_in(name: &str, section: &str) -> (String, std::path::PathBuf) {
    let script = match section {
        "review" => APPROVE.to_string(),
        "routing" => "analysis".to_string(),
        _ => format!(
            "{} plays the {section} part.",
            orchestra::narrate::stage_name(name)
        ),
    };
    let path = model(&format!("shipped-{name}-{section}"), &script);
    (script, path)
}

#[tokio::test]
async fn every_shipped_score_plays_on_scripted_stand_ins() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scores");
    let cases: &[(&str, &str, bool)] = &[
        // (score, the section that answers, whether a reviewer checks it)
        ("default.lua", "code", true),
        // Measured: on code the band did not beat Coltrane alone, so he plays alone.
        ("pocket.lua", "code", false),
        ("code_review.lua", "code", true),
        ("cascade.lua", "analysis", true),
        ("jam.lua", "analysis", false),
        ("rehearsal.lua", "code", true),
    ];
    for (file, section, reviewed) in cases {
        let path = dir.join(file);
        let report = orchestra::score::check(orchestra::score::ScoreSource::file(&path), options())
            .await
            .unwrap_or_else(|e| panic!("scores/{file} checks:\n{e}"));
        assert!(
            !report.notes.iter().any(|n| n.contains("deprecated")),
            "scores/{file} uses no deprecated form: {:?}",
            report.notes
        );
        let mut opts = options();
        let mut scripts = std::collections::HashMap::new();
        for i in report.bands.iter().flat_map(|b| &b.instruments) {
            if *file == "rehearsal.lua" {
                scripts.insert(i.name.clone(), script(&i.name).to_string());
                continue;
            }
            let (said, file) = stand_in(&i.name, &i.section);
            scripts.insert(i.name.clone(), said);
            opts = opts.with_model_override(&i.name, file);
        }
        let c =
            orchestra::score::Conductor::start(orchestra::score::ScoreSource::file(&path), opts)
                .await
                .unwrap_or_else(|e| panic!("scores/{file} loads:\n{e}"));
        let (answer, _) = perform(&c, "write a python function that reverses a list").await;
        let player = answer.data["player"].as_str().unwrap_or_default();
        assert_eq!(
            answer.data["section"], *section,
            "{file}: {:#}",
            answer.data
        );
        assert_eq!(answer.text, scripts[player], "{file}: {player} answered");
        let t = &answer.data["trace"];
        if *reviewed {
            assert_eq!(t["reviews"][0]["verdict"], "approve", "{file}: {t:#}");
            assert_ne!(t["reviews"][0]["reviewer"], player, "{file}");
        } else {
            assert!(t["reviews"].is_null(), "{file}: {t:#}");
        }
        if *file == "pocket.lua" {
            let skipped: Vec<&str> = t["skipped"]
                .as_array()
                .unwrap_or_else(|| panic!("{t:#}"))
                .iter()
                .map(|s| s["part"].as_str().unwrap())
                .collect();
            assert_eq!(skipped, ["comp", "review"], "{t:#}");
            assert!(
                t["skipped"][0]["why"]
                    .as_str()
                    .unwrap()
                    .contains("HumanEval")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Agents' turns and the calls that go back to them
// ---------------------------------------------------------------------------------------

/// A soloist that answers every prompt by calling `read` on NOTES.md again.
const READ_CALL: &str = r#"<tool_call>
{"name": "read", "arguments": {"path": "NOTES.md"}}
</tool_call>"#;

fn tool(name: &str) -> orchestra::engine::Tool {
    orchestra::engine::Tool {
        name: name.into(),
        description: Some(format!("{name} a file in the workspace")),
        parameters: serde_json::json!({
            "type": "object",
            "properties": { "path": { "type": "string" } },
            "required": ["path"],
        }),
    }
}

/// An agent's second turn: it asked to read NOTES.md, the tool answered.
fn agent_request(user: &str) -> orchestra::score::Request {
    use orchestra::engine::{ChatMessage, ToolCall};
    let mut call = ChatMessage::assistant("");
    call.tool_calls = vec![ToolCall {
        id: "call_1".into(),
        name: "read".into(),
        arguments: r#"{ "path" : "NOTES.md" }"#.into(),
    }];
    let mut result = ChatMessage::new("tool", "the secret word is blue");
    result.tool_call_id = Some("call_1".into());
    orchestra::score::Request {
        messages: vec![ChatMessage::user(user), call, result],
        tools: vec![tool("read"), tool("write")],
        ..Default::default()
    }
}

#[tokio::test]
async fn an_agents_turn_is_played_by_the_soloist_alone_and_the_trace_says_why() {
    // A soloist whose script has no `{`: offered tools, a `{` may open a call.
    let members = [
        member("sonny", "code", &model("plain", ELLA_NOTES)),
        member("monk", "analysis", &model("monk", MONK_NOTES)),
        member("approver", "review", &model("approver", APPROVE)),
    ]
    .concat();
    let text = score(
        SECTIONS,
        &members,
        r#"return arrange.perform(band, req, { section = "code", comp = { max_tokens = 16 } })"#,
    );
    let c = start("agent_turn", &text).await.unwrap();
    // An ordinary request: the band comps and reviews.
    let (plain, _) = perform(&c, "write a function that reverses a string").await;
    assert!(plain.data["trace"]["comp"].is_object(), "{:#}", plain.data);
    assert!(plain.data["trace"]["skipped"].is_null());
    // The same words with tools offered: the soloist alone, and the reasons recorded.
    let mut req = orchestra::score::Request::prompt("write a function that reverses a string");
    req.tools = vec![tool("read")];
    let mut rx = c.events().subscribe();
    let answer = c.perform(req).await.unwrap();
    let trace = &answer.data["trace"];
    assert!(trace["comp"].is_null(), "{trace:#}");
    assert!(trace["reviews"].is_null(), "{trace:#}");
    let skipped: Vec<(String, String)> = trace["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["part"].as_str().unwrap().into(),
                s["why"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        skipped,
        [
            (
                "comp".to_string(),
                "an agent's turn: the request offers tools".to_string()
            ),
            (
                "review".to_string(),
                "an agent's turn: the request offers tools".to_string()
            ),
        ]
    );
    assert_eq!(answer.text, ELLA_NOTES);
    // Only the soloist played.
    let mut played = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let orchestra::events::EventKind::GenerationStarted { model, .. } = e.kind {
            played.push(model);
        }
    }
    assert_eq!(played, ["sonny"]);
    let rendered = orchestra::trace::render_trace(trace);
    assert!(
        rendered
            .lines()
            .any(|l| l.trim_start().starts_with("skipped")
                && l.ends_with("review: an agent's turn: the request offers tools")),
        "{rendered}"
    );
}

#[tokio::test]
async fn a_repeated_tool_call_is_not_returned_and_the_soloist_is_asked_again_without_tools() {
    let members = [member("looper", "code", &model("looper", READ_CALL))].concat();
    let text = score(
        SECTIONS,
        &members,
        r#"return arrange.perform(band, req, { section = "code" })"#,
    );
    let c = start("repeated_call", &text).await.unwrap();
    // First turn: nothing answered yet, the call goes back to the client.
    let mut first = orchestra::score::Request::prompt("read NOTES.md and tell me the secret word");
    first.tools = vec![tool("read"), tool("write")];
    let answer = c.perform(first).await.unwrap();
    let calls = answer.data["tool_calls"].as_array().expect("a tool call");
    assert_eq!(calls.len(), 1, "{:#}", answer.data);
    assert_eq!(calls[0]["name"], "read");
    assert!(answer.data["trace"]["tools"].is_null());
    // Second turn: the same call (arguments written differently) already has its
    // result, so it is held back and the soloist plays again with no tools.
    let mut rx = c.events().subscribe();
    let answer = c
        .perform(agent_request("read NOTES.md and tell me the secret word"))
        .await
        .unwrap();
    assert!(answer.data["tool_calls"].is_null(), "{:#}", answer.data);
    let tools = &answer.data["trace"]["tools"];
    assert_eq!(tools["blocked"][0]["name"], "read", "{tools:#}");
    assert_eq!(
        tools["blocked"][0]["why"],
        "the conversation already has its result"
    );
    assert_eq!(tools["asked_again"], "without tools");
    let mut generations = 0;
    let mut guard = None;
    while let Ok(e) = rx.try_recv() {
        match e.kind {
            orchestra::events::EventKind::GenerationStarted { .. } => generations += 1,
            orchestra::events::EventKind::Custom { name, data } if name == "tool_guard" => {
                guard = Some(data)
            }
            _ => {}
        }
    }
    assert_eq!(generations, 2, "the soloist was asked twice");
    let guard = guard.expect("a tool_guard event");
    assert_eq!(guard["player"], "looper");
    // With the guard off, the call goes back as made.
    let text = score(
        SECTIONS,
        &members,
        r#"return arrange.perform(band, req, { section = "code", tool_policy = false })"#,
    );
    let c = start("repeated_call_off", &text).await.unwrap();
    let answer = c
        .perform(agent_request("read NOTES.md and tell me the secret word"))
        .await
        .unwrap();
    assert_eq!(
        answer.data["tool_calls"][0]["name"], "read",
        "{:#}",
        answer.data
    );
}

#[tokio::test]
async fn the_careful_tool_policy_keeps_one_harmless_new_call_per_turn() {
    let text = score(
        SECTIONS,
        &member("sonny", "code", &model("sonny", SONNY)),
        r#"local policy = arrange.careful_tools()
        local function call(name, path) return { name = name, arguments = orchestra.json.encode({ path = path }) } end
        local function run(r, calls)
          local kept, blocked = policy(r, calls)
          local out = { kept = {}, blocked = {} }
          for _, c in ipairs(kept) do out.kept[#out.kept + 1] = c.name .. ":" .. orchestra.json.decode(c.arguments).path end
          for _, b in ipairs(blocked) do out.blocked[#out.blocked + 1] = b.call.name .. ": " .. b.why end
          return out
        end
        local answered = { prompt = "what is in NOTES.md?", messages = {
          { role = "user", content = "what is in NOTES.md?" },
          { role = "assistant", content = "", tool_calls = { { id = "c1", name = "read", arguments = '{"path":"NOTES.md"}' } } },
          { role = "tool", tool_call_id = "c1", content = "hello" },
        } }
        return {
          -- a read asked for a question: kept; a second call in the same turn: blocked
          ask = run({ prompt = "what is in NOTES.md?" }, { call("read", "NOTES.md"), call("read", "TODO.md") }),
          -- a write when the user only asked: blocked
          write_unasked = run({ prompt = "what is in NOTES.md?" }, { call("write", "NOTES.md") }),
          -- a write the user asked for: kept
          write_asked = run({ prompt = "please update NOTES.md with the date" }, { call("write", "NOTES.md") }),
          -- the call the conversation answered already: blocked
          repeat_call = run(answered, { call("read", "NOTES.md") }),
          -- the same tool on another file is a new call
          other_file = run(answered, { call("read", "TODO.md") }),
        }"#,
    );
    let (answer, _) = play("careful_tools", &text, "x").await;
    let d = &answer.data;
    let strs = |v: &Value| strings(v);
    assert_eq!(strs(&d["ask"]["kept"]), ["read:NOTES.md"]);
    assert_eq!(
        strs(&d["ask"]["blocked"]),
        ["read: at most 1 call per turn"]
    );
    assert!(strs(&d["write_unasked"]["kept"]).is_empty());
    assert_eq!(
        strs(&d["write_unasked"]["blocked"]),
        ["write: it changes files or runs commands, and the request asks for no change"]
    );
    assert_eq!(strs(&d["write_asked"]["kept"]), ["write:NOTES.md"]);
    assert_eq!(
        strs(&d["repeat_call"]["blocked"]),
        ["read: the conversation already has its result"]
    );
    assert_eq!(strs(&d["other_file"]["kept"]), ["read:TODO.md"]);
}

// ---------------------------------------------------------------------------------------
// Vote
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn vote_keeps_the_answer_most_takes_agree_on() {
    let members = [
        member("ornette", "code", &model("ornette", ELLA_NOTES)),
        member("sonny", "code", &model("sonny", SONNY)),
        member("rollins", "code", &model("rollins", SONNY)),
    ]
    .concat();
    let text = score(
        SECTIONS,
        &members,
        r#"local draft = assert(arrange.vote(band, "code", req, { players = { band.ornette, band.sonny, band.rollins } }))
        local t = trace.of(req)
        return { text = draft.text, player = draft.player, votes = draft.votes, vote = t.vote, trace = t }"#,
    );
    let (answer, events) = play("vote_majority", &text, "reverse a string").await;
    let d = &answer.data;
    // Ornette plays first but alone; the two that agree win, the earlier of them goes out.
    assert_eq!(d["text"], SONNY, "{d:#}");
    assert_eq!(d["player"], "sonny");
    assert_eq!(d["votes"]["agreeing"], 2);
    assert_eq!(d["votes"]["of"], 3);
    assert_eq!(d["votes"]["picked"], 2);
    assert_eq!(d["vote"]["why"], "2 of 3 takes agree");
    let said = narration(&events);
    assert!(
        said.iter()
            .any(|l| l == "Ornette, Sonny and Rollins each play a take."),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|l| l == "2 of 3 takes agree; Sonny's take goes out."),
        "{said:?}"
    );
    let rendered = orchestra::trace::render_trace(&d["trace"]);
    assert!(
        rendered.contains("2 of 3 takes agree; take 2 goes out"),
        "{rendered}"
    );
}

#[tokio::test]
async fn vote_plays_one_models_takes_together_in_one_batch() {
    // `member` gives sonny 4 slots: four takes decode side by side.
    let text = score(
        SECTIONS,
        &member("sonny", "code", &model("sonny", SONNY)),
        r#"band.sonny:load()
        local draft = assert(arrange.vote(band, "code", req, { n = 4, generate = { ignore_eos = true }, max_tokens = 200 }))
        return { votes = draft.votes, takes = trace.of(req).vote.takes }"#,
    );
    let (answer, events) = play("vote_batch", &text, "reverse a string").await;
    let d = &answer.data;
    assert_eq!(d["votes"]["of"], 4, "{d:#}");
    // Every take was under way before the first one finished.
    let spans = spans(&events, "sonny");
    assert_eq!(spans.len(), 4, "{spans:?}");
    let last_start = spans.iter().map(|s| s.0).fold(f64::MIN, f64::max);
    let first_end = spans.iter().map(|s| s.1).fold(f64::MAX, f64::min);
    assert!(
        last_start < first_end,
        "the takes ran one after another: {spans:?}"
    );
    assert_eq!(len(&d["takes"]), 4);
}

#[tokio::test]
async fn a_pick_function_chooses_the_take_and_a_wrong_index_is_an_error() {
    let members = [
        member("sonny", "code", &model("sonny", SONNY)),
        member("ornette", "code", &model("ornette", ELLA_NOTES)),
    ]
    .concat();
    let text = score(
        SECTIONS,
        &members,
        r#"local players = { band.sonny, band.ornette }
        local longest = function(c) if #c[1].text >= #c[2].text then return 1, "longest" end return 2, "longest" end
        local draft = assert(arrange.vote(band, "code", req, { players = players, pick = longest }))
        local ok, err = pcall(arrange.vote, band, "code", req, { players = players, pick = function() return 7 end })
        return { text = draft.text, why = trace.of(req).vote.why, ok = ok, err = tostring(err) }"#,
    );
    let (answer, _) = play("vote_pick", &text, "x").await;
    let d = &answer.data;
    let longest = if ELLA_NOTES.len() >= SONNY.len() {
        ELLA_NOTES
    } else {
        SONNY
    };
    assert_eq!(d["text"], longest);
    assert_eq!(d["why"], "longest");
    assert_eq!(d["ok"], false);
    assert!(
        d["err"]
            .as_str()
            .unwrap()
            .contains("`pick` must return a candidate's index (1 to 2), got 7"),
        "{d:#}"
    );
}
