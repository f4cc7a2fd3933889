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
        draft = arrange.review(draft, band.rejecter, { rounds = tonumber(req.prompt) })
        return arrange.answer(req, draft)"#,
    );
    let c = start("revise_bound", &text).await.unwrap();
    for (rounds, reviews, revisions) in [(0, 1, 0), (1, 1, 1), (2, 2, 2), (3, 3, 3)] {
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
    }
}

#[tokio::test]
async fn an_approving_reviewer_ends_the_review_at_once() {
    let text = score(
        SECTIONS,
        &members(),
        r#"local draft = assert(arrange.solo(band, "code", req))
        return arrange.answer(req, arrange.review(draft, band.approver, { rounds = 3 }))"#,
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
          draft = arrange.review(draft, band.sonny, { rounds = 1 })
        elseif case == "the reviewer wrote the draft" then
          draft = assert(arrange.solo(band, band.rejecter, req))
          draft = arrange.review(draft, nil, { rounds = 1 })
        elseif case == "picked before the solo" then
          local reviewer = band:reviewer { ["not"] = band.sonny }
          draft = assert(arrange.solo(band, "review", req))   -- the review section's lead plays
          draft = arrange.review(draft, reviewer, { rounds = 1 })
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
        r#"route.rules {
          { when = route.keywords { "function", "rust", "code" }, section = "code" },
          { when = route.keywords { "poem", "song" }, section = "creative" },
          { otherwise = "analysis" },
        }
        return arrange.perform(band, req, { comp = { max_tokens = 24 }, review = { reviewer = band.rejecter, rounds = 1 } })"#,
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
        ["routed", "comp", "solo", "review", "verdict", "revise"]
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
        r#"route.rules { { otherwise = "code" } }
        return arrange.perform(band, req, { comp = false, review = false })"#,
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
        (r#"{"verdict":"appr"#, "approve", &[], "unreadable"),
        ("Looks good to me!", "approve", &[], "unreadable"),
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
