//! Every Lua-exposed method, called from Lua, against real inference on the synthetic
//! rehearsal band: models, sampling, the stage, the band's player picks, `together`,
//! logging and events.

mod score_support;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use orchestra::events::EventKind;
use orchestra::score::{Request, ScoreError};
use score_support::*;

#[tokio::test]
async fn generate_returns_the_models_text_and_details() {
    let out = play_json(
        "generate",
        r#"local text, d = band.coltrane:generate("hello")
        return { text = text, model = d.model, finish = d.finish_reason, tokens = d.completion_tokens, ttft = d.timings.ttft_ms }"#,
    )
    .await;
    assert_eq!(out["text"], script("coltrane"));
    assert_eq!(out["model"], "coltrane");
    assert_eq!(out["finish"], "stop");
    assert!(out["tokens"].as_u64().unwrap() > 3, "{out}");
    assert!(out["ttft"].as_f64().unwrap() > 0.0, "{out}");
}

#[tokio::test]
async fn each_instrument_plays_its_own_part() {
    let out = play_json(
        "each_plays",
        r#"local out = {}
        for _, m in ipairs(band:members()) do out[m.name] = m:generate("hi") end
        return out"#,
    )
    .await;
    for name in ["coltrane", "ella", "monk", "mingus"] {
        assert_eq!(out[name], script(name), "{name}");
    }
}

#[tokio::test]
async fn stream_calls_back_per_piece_and_stops_when_the_callback_returns_false() {
    let out = play_json(
        "stream",
        r#"local pieces = {}
        local text, d = band.ella:stream("sing", function(p) pieces[#pieces + 1] = p end)
        local few = {}
        local cut, d2 = band.ella:stream("sing", { max_tokens = 50 }, function(p)
          few[#few + 1] = p
          if #few == 3 then return false end
        end)
        return { text = text, joined = table.concat(pieces), n = #pieces,
                 cut = cut, few = table.concat(few), finish = d2.finish_reason }"#,
    )
    .await;
    assert_eq!(out["text"], script("ella"));
    assert_eq!(out["joined"], script("ella"));
    assert!(out["n"].as_u64().unwrap() > 3, "{out}");
    assert_eq!(out["cut"], out["few"]);
    assert_eq!(out["finish"], "cancelled");
    assert!(script("ella").starts_with(out["cut"].as_str().unwrap()));
}

#[tokio::test]
async fn chat_takes_messages_and_a_system_prompt() {
    let out = play_json(
        "chat",
        r#"local a = band.monk:chat({ { role = "user", content = "why?" } }, { system = "be brief" })
        local b = band.monk:chat(req)      -- a request table works as the conversation
        local c = band.monk:generate({ raw = "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n" })
        return { a = a, b = b, c = c }"#,
    )
    .await;
    for k in ["a", "b", "c"] {
        assert_eq!(out[k], script("monk"), "{k}: {out}");
    }
}

#[tokio::test]
async fn max_tokens_and_stop_strings_end_the_answer() {
    let out = play_json(
        "limits",
        r#"local short, d = band.coltrane:generate("x", { max_tokens = 3 })
        local stopped, d2 = band.coltrane:generate("x", { stop = "(" })
        return { short = short, finish = d.finish_reason, tokens = d.completion_tokens,
                 stopped = stopped, finish2 = d2.finish_reason }"#,
    )
    .await;
    assert_eq!(out["finish"], "length");
    assert_eq!(out["tokens"], 3);
    assert!(script("coltrane").starts_with(out["short"].as_str().unwrap()));
    assert_eq!(out["stopped"], "fn reverse");
    assert_eq!(out["finish2"], "stop_string");
}

#[tokio::test]
async fn tokenize_and_detokenize_round_trip() {
    let out = play_json(
        "tokens",
        r#"local t = band.coltrane:tokenize("hello world")
        local with_bos = band.coltrane:tokenize("hello world", { bos = true })
        return { n = #t, n_bos = #with_bos, first = t[1], back = band.coltrane:detokenize(t) }"#,
    )
    .await;
    let n = out["n"].as_u64().unwrap();
    assert!(n >= 2, "{out}");
    assert_eq!(out["n_bos"].as_u64().unwrap(), n + 1);
    assert!(out["first"].is_i64(), "{out}");
    assert!(
        out["back"].as_str().unwrap().contains("hello world"),
        "{out}"
    );
}

#[tokio::test]
async fn embed_returns_normalised_vectors() {
    let out = play_json(
        "embed",
        r#"local b = orchestra.band { memory = "1GiB" }
        local e = b:add("embedder", { model = orchestra.rehearsal_model("monk"), section = "analysis", embeddings = true, context = 128 })
        local v, err = e:embed("a walking bass line")
        assert(v, err)
        local norm = 0
        for _, x in ipairs(v) do norm = norm + x * x end
        local two = e:embed({ "first", "second" })
        local none, why = band.monk:embed("not an embedding model")
        return { dims = #v, norm = math.sqrt(norm), count = #two, dims2 = #two[2], none = none, why = why }"#,
    )
    .await;
    assert!(out["dims"].as_u64().unwrap() > 8, "{out}");
    assert!((out["norm"].as_f64().unwrap() - 1.0).abs() < 1e-3, "{out}");
    assert_eq!(out["count"], 2);
    assert_eq!(out["dims2"], out["dims"]);
    assert!(out["none"].is_null());
    assert!(out["why"].as_str().unwrap().contains("embeddings"), "{out}");
}

#[tokio::test]
async fn load_unload_and_info_follow_residency() {
    let out = play_json(
        "residency",
        r#"local m = band.mingus
        local before = m:info()
        local ok = m:load()
        local after = m:info()
        local resident = band.stage:is_resident(m)
        local unloaded = m:unload()
        local again = m:unload()
        return { before = before.loaded, estimate = before.footprint, estimated = before.estimated,
                 ok = ok, after = after.loaded, params = after.n_params, footprint = after.footprint,
                 resident = resident, unloaded = unloaded, again = again, gone = m:info().loaded }"#,
    )
    .await;
    assert_eq!(out["before"], false);
    assert!(out["estimate"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(out["estimated"], true);
    assert_eq!(out["ok"], true);
    assert_eq!(out["after"], true);
    assert!(out["params"].as_u64().unwrap() > 0, "{out}");
    assert!(out["footprint"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(out["resident"], true);
    assert_eq!(out["unloaded"], true);
    assert_eq!(out["again"], false);
    assert_eq!(out["gone"], false);
}

#[tokio::test]
async fn sampling_values_merge_validate_and_print() {
    let out = play_json(
        "sampling",
        r#"local s = orchestra.sampling { temperature = 0.9, top_k = 20, seed = 7 }
        local t = s:with { top_k = 5 }
        local a = band.ella:generate("x", { sampling = t, max_tokens = 12 })
        local b = band.ella:generate("x", { sampling = t, max_tokens = 12 })
        local greedy = band.ella:generate("x", { sampling = { greedy = true } })
        local ok, err = pcall(orchestra.sampling, { temprature = 1 })
        local ok2, err2 = pcall(function() return band.ella:generate("x", { top_p = 2 }) end)
        return { top_k = t.top_k, temp = t.temperature, seed = t.seed, str = tostring(t),
                 same = a == b, greedy = greedy, err = err, err2 = err2,
                 member = band.ella.sampling.temperature }"#,
    )
    .await;
    assert_eq!(out["top_k"], 5);
    assert!((out["temp"].as_f64().unwrap() - 0.9).abs() < 1e-6);
    assert_eq!(out["seed"], 7);
    assert!(out["str"].as_str().unwrap().contains("seed=7"), "{out}");
    assert_eq!(out["same"], true, "the same seed gives the same text");
    assert_eq!(out["greedy"], script("ella"));
    assert!(
        out["err"]
            .as_str()
            .unwrap()
            .contains("did you mean `temperature`"),
        "{out}"
    );
    assert!(
        out["err2"].as_str().unwrap().contains("between 0 and 1"),
        "{out}"
    );
    assert_eq!(out["member"], 0.0);
}

#[tokio::test]
async fn a_grammar_constrains_the_output() {
    let out = play_json(
        "grammar",
        r#"return { band.coltrane:generate("yes or no?", { grammar = 'root ::= "yes" | "no"', max_tokens = 8 }) }"#,
    )
    .await;
    let text = out[0].as_str().unwrap();
    assert!(text == "yes" || text == "no", "{out}");
}

#[tokio::test]
async fn the_stage_reports_budget_residents_and_obeys_pin_and_evict() {
    let out = play_json(
        "stage",
        r#"local stage = band.stage
        band.coltrane:generate("x", { max_tokens = 2 })
        local resident = stage:resident()
        local used = stage:used()
        stage:pin("coltrane")
        local pinned = stage:resident()[1].pinned
        stage:pin(band.coltrane, false)
        local evicted = stage:evict(band.coltrane)
        return { budget = stage:budget(), used = used, n = #resident, name = resident[1].name,
                 footprint = resident[1].footprint, pinned = pinned, evicted = evicted,
                 after = stage:is_resident("coltrane"), str = tostring(stage), names = #stage:names() }"#,
    )
    .await;
    assert_eq!(out["budget"], 2u64 << 30);
    assert!(out["used"].as_u64().unwrap() > 0);
    assert_eq!(out["n"], 1);
    assert_eq!(out["name"], "coltrane");
    assert!(out["footprint"].as_u64().unwrap() > 0);
    assert_eq!(out["pinned"], true);
    assert_eq!(out["evicted"], true);
    assert_eq!(out["after"], false);
    assert!(out["str"].as_str().unwrap().starts_with("Stage("), "{out}");
    assert_eq!(out["names"], 4);
}

#[tokio::test]
async fn the_band_picks_players_by_section() {
    let out = play_json(
        "picks",
        r#"local function names(list) local t = {} for i, m in ipairs(list) do t[i] = m.name end return t end
        local _, lead_err = pcall(band.lead, band, "cod")
        local _, index_err = pcall(function() return band.nobody end)
        return {
          lead = band:lead("code").name,
          review = names(band:section("review")),
          others = names(band:others(band.coltrane)),
          others2 = names(band:others({ "coltrane", band.ella })),
          reviewer = band:reviewer().name,
          reviewer_not = band:reviewer { except = band.mingus }.name,
          reviewer_for = band:reviewer(band.mingus).name,
          has_code = band:has("code"), has_jazz = band:has("jazz"), has_monk = band:has("monk"),
          count = #band, sections = band:sections(), same = band.coltrane == band:lead("code"),
          lead_err = lead_err, index_err = index_err, str = tostring(band),
          name = band.coltrane.name, section = band.coltrane.section,
        }"#,
    )
    .await;
    assert_eq!(out["lead"], "coltrane");
    assert_eq!(out["review"], serde_json::json!(["mingus"]));
    assert_eq!(out["others"], serde_json::json!(["ella", "monk", "mingus"]));
    assert_eq!(out["others2"], serde_json::json!(["monk", "mingus"]));
    assert_eq!(out["reviewer"], "mingus");
    assert_eq!(out["reviewer_not"], "coltrane");
    assert_eq!(out["reviewer_for"], "coltrane");
    assert_eq!(out["has_code"], true);
    assert_eq!(out["has_jazz"], false);
    assert_eq!(out["has_monk"], true);
    assert_eq!(out["count"], 4);
    assert_eq!(
        out["sections"],
        serde_json::json!(["code", "creative", "analysis", "review"])
    );
    assert_eq!(out["same"], true);
    assert!(
        out["lead_err"]
            .as_str()
            .unwrap()
            .contains("did you mean `code`"),
        "{out}"
    );
    assert!(
        out["index_err"].as_str().unwrap().contains("`coltrane`"),
        "{out}"
    );
    assert!(
        out["str"].as_str().unwrap().contains("coltrane (code)"),
        "{out}"
    );
    assert_eq!(out["name"], "coltrane");
    assert_eq!(out["section"], "code");
}

/// Pairs of (start, end) times per model from the event bus.
fn spans(events: &[orchestra::events::Event], model: &str) -> Vec<(f64, f64)> {
    let mut starts = Vec::new();
    let mut spans = Vec::new();
    for e in events {
        match &e.kind {
            EventKind::GenerationStarted { model: m, .. } if m == model => starts.push(e.at_ms),
            EventKind::GenerationFinished { model: m, .. } if m == model => {
                spans.push((starts.remove(0), e.at_ms))
            }
            _ => {}
        }
    }
    spans
}

#[tokio::test]
async fn together_really_plays_two_models_at_the_same_time() {
    let path = write_score(
        "together",
        &score_with(
            r#"local results, errors = band:together {
              function() return band.coltrane:generate("a", { max_tokens = 200, ignore_eos = true }) end,
              function() return band.ella:generate("b", { max_tokens = 200, ignore_eos = true }) end,
              keyed = function() return band.monk:generate("c") end,
              failing = function() return nil, "no luck" end,
            }
            return { first = #results[1], second = #results[2], keyed = results.keyed, err = errors.failing }"#,
        ),
    );
    let c = start(&path).await.unwrap();
    let mut rx = c.events().subscribe();
    let answer = c.perform(Request::prompt("go")).await.unwrap();
    assert!(answer.data["first"].as_u64().unwrap() > 0);
    assert!(answer.data["second"].as_u64().unwrap() > 0);
    assert_eq!(answer.data["keyed"], script("monk"));
    assert_eq!(answer.data["err"], "no luck");
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    let a = spans(&events, "coltrane");
    let b = spans(&events, "ella");
    assert_eq!((a.len(), b.len()), (1, 1), "{events:#?}");
    let ((a0, a1), (b0, b1)) = (a[0], b[0]);
    assert!(
        a0 < b1 && b0 < a1,
        "the two generations overlap in time: coltrane {a0}..{a1}, ella {b0}..{b1}"
    );
}

#[tokio::test]
async fn together_raises_the_first_error_and_names_the_part() {
    let err = play(
        "together_error",
        r#"return band:together { function() return 1 end, function() error("boom") end }"#,
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`together` part the number 2"), "{msg}");
    assert!(msg.contains("boom"), "{msg}");
}

#[tokio::test]
async fn misuse_raises_with_the_file_and_line() {
    let err = play("misuse", "\n\nlocal x = band:lead(nil)\nreturn x")
        .await
        .unwrap_err();
    let ScoreError::Lua { message, traceback } = &err else {
        panic!("a Lua error: {err}")
    };
    // The preamble is 11 lines; the body starts after `perform = function(req)`.
    assert!(message.contains("score.lua:15:"), "{message}");
    assert!(
        message.contains("`band:lead` needs a section name, got nil"),
        "{message}"
    );
    assert!(
        traceback
            .as_deref()
            .unwrap_or("")
            .contains("stack traceback"),
        "{err}"
    );
}

#[tokio::test]
async fn failures_at_run_time_return_nil_and_a_message() {
    let out = play_json(
        "failures",
        r#"local text, err = band.coltrane:generate(string.rep("word ", 3000))
        return { text = text, err = err }"#,
    )
    .await;
    assert!(out["text"].is_null());
    assert!(out["err"].as_str().unwrap().contains("prompt"), "{out}");
}

#[tokio::test]
async fn model_and_band_take_extension_methods() {
    let out = play_json(
        "extensions",
        r#"function orchestra.Model:shout(prompt) return (self:generate(prompt)):upper() end
        function orchestra.Band:leads() local t = {} for _, s in ipairs(self:sections()) do t[s] = self:lead(s).name end return t end
        return { shout = band.ella:shout("x"), leads = band:leads() }"#,
    )
    .await;
    assert_eq!(out["shout"], script("ella").to_uppercase());
    assert_eq!(out["leads"]["review"], "mingus");
}

#[tokio::test]
async fn perform_streams_what_it_writes() {
    let path = write_score(
        "writes",
        &score_with(r#"return band.coltrane:stream(req, function(p) req:write(p) end)"#),
    );
    let c = start(&path).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let answer = c
        .perform_streaming(Request::prompt("reverse"), tx)
        .await
        .unwrap();
    let mut got = String::new();
    let mut pieces = 0;
    while let Ok(p) = rx.try_recv() {
        got.push_str(&p);
        pieces += 1;
    }
    assert!(pieces > 3);
    assert_eq!(got, script("coltrane"));
    assert_eq!(answer.text, script("coltrane"));
    assert!(answer.streamed);
    assert_eq!(answer.score_version, 1);
}

#[tokio::test]
async fn the_request_carries_the_conversation_and_client_limits() {
    let path = write_score(
        "request",
        &score_with(
            r#"local text, d = band.monk:generate(req)
            return { prompt = req.prompt, n = #req.messages, role = req.messages[1].role,
                     max = req.max_tokens, model = req.model, tokens = d.completion_tokens, id = req.id }"#,
        ),
    );
    let c = start(&path).await.unwrap();
    let req = Request {
        messages: vec![
            orchestra::engine::ChatMessage::system("terse"),
            orchestra::engine::ChatMessage::user("why?"),
        ],
        max_tokens: Some(4),
        model: Some("analysis".into()),
        ..Request::default()
    };
    let out = c.perform(req).await.unwrap().data;
    assert_eq!(out["prompt"], "why?");
    assert_eq!(out["n"], 2);
    assert_eq!(out["role"], "system");
    assert_eq!(out["max"], 4);
    assert_eq!(out["model"], "analysis");
    assert_eq!(out["tokens"], 4, "the client's max_tokens applies");
    assert!(out["id"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn emit_and_narrate_publish_on_the_event_bus() {
    let path = write_score(
        "emit",
        &score_with(
            r#"orchestra.emit("routed", { section = "code", score = 0.5 })
            orchestra.narrate("coltrane takes the solo")
            return "ok""#,
        ),
    );
    let c = start(&path).await.unwrap();
    let mut rx = c.events().subscribe();
    c.perform(Request::prompt("x")).await.unwrap();
    let mut customs = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let EventKind::Custom { name, data } = e.kind {
            customs.push((name, data));
        }
    }
    assert_eq!(customs[0].0, "routed");
    assert_eq!(
        customs[0].1,
        serde_json::json!({ "section": "code", "score": 0.5 })
    );
    assert_eq!(customs[1].0, "narration");
    assert_eq!(customs[1].1["text"], "coltrane takes the solo");
}

/// Everything logged under the `orchestra::score` target, for the whole test binary.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
        let writer = buf.clone();
        let make = move || LogWriter(writer.clone());
        tracing_subscriber::fmt()
            .with_env_filter("orchestra::score=debug")
            .with_writer(make)
            .with_ansi(false)
            .init();
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn log_goes_to_tracing_with_the_score_and_line() {
    let logs = captured_logs();
    play_json(
        "log",
        r#"orchestra.log("picked", "coltrane")
        orchestra.log.warn("no reviewer today")
        return {}"#,
    )
    .await;
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("INFO") && text.contains("picked coltrane"),
        "{text}"
    );
    assert!(
        text.contains("WARN") && text.contains("no reviewer today"),
        "{text}"
    );
    assert!(text.contains("score.lua:13"), "{text}");
}

#[tokio::test]
async fn json_inspect_clock_and_sleep_work() {
    let out = play_json(
        "utilities",
        r#"local t0 = orchestra.clock()
        orchestra.sleep(0.02)
        local doc = orchestra.json.decode('{"a": [1, 2], "b": null}')
        return { slept = orchestra.clock() - t0, a2 = doc.a[2], b = doc.b,
                 enc = orchestra.json.encode({ x = 1 }), shown = orchestra.inspect({ 1, "two", k = true }),
                 bad = select(2, orchestra.json.decode("{")) }"#,
    )
    .await;
    assert!(out["slept"].as_f64().unwrap() >= 0.019, "{out}");
    assert_eq!(out["a2"], 2);
    assert!(out["b"].is_null());
    assert_eq!(out["enc"], r#"{"x":1}"#);
    assert_eq!(out["shown"], r#"{ [1] = 1, [2] = "two", k = true }"#);
    assert!(
        out["bad"].as_str().unwrap().contains("invalid JSON"),
        "{out}"
    );
}

#[tokio::test]
async fn require_serves_the_stdlib_and_files_beside_the_score() {
    let dir = test_dir("require");
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(
        dir.join("lib/helper.lua"),
        "local M = {}\nfunction M.twice(x) return x .. x end\nreturn M\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("score.lua"),
        score_with(
            r#"local text = require("orchestra.text")
            local helper = require("lib.helper")
            local ok, err = pcall(require, "lib.missing")
            local ok2, err2 = pcall(require, "orchestra.nothing")
            return { words = text.words("Hello, World"), twice = helper.twice("ab"),
                     same = require("lib.helper") == helper, err = err, err2 = err2 }"#,
        ),
    )
    .unwrap();
    let c = start(&dir.join("score.lua")).await.unwrap();
    let out = c.perform(Request::prompt("x")).await.unwrap().data;
    assert_eq!(out["words"], serde_json::json!(["hello", "world"]));
    assert_eq!(out["twice"], "abab");
    assert_eq!(out["same"], true);
    assert!(
        out["err"].as_str().unwrap().contains("lib/missing.lua"),
        "{out}"
    );
    assert!(
        out["err2"].as_str().unwrap().contains("orchestra.text"),
        "{out}"
    );
    let info = c.info().await.unwrap();
    assert!(
        info.files.iter().any(|f| f.ends_with("lib/helper.lua")),
        "{info:?}"
    );
}

#[tokio::test]
async fn model_calls_yield_so_other_requests_play_meanwhile() {
    let path = write_score(
        "interleave",
        &score_with(
            r#"if req.prompt == "slow" then
              return band.coltrane:generate("x", { max_tokens = 300, ignore_eos = true })
            end
            return "quick""#,
        ),
    );
    let c = start(&path).await.unwrap();
    let slow = tokio::spawn({
        let c = c.clone();
        async move { c.perform(Request::prompt("slow")).await }
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let quick = c.perform(Request::prompt("fast")).await.unwrap();
    assert_eq!(quick.text, "quick");
    assert!(!slow.is_finished(), "the slow request is still generating");
    slow.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_idle_model_unloads_after_the_bands_idle_unload() {
    let out = play_json(
        "idle_unload",
        r#"local b = orchestra.band { memory = "1GiB", idle_unload = "100ms" }
        local m = b:add("ella", { model = orchestra.rehearsal_model("ella"), section = "creative" })
        m:generate("x", { max_tokens = 2 })
        local right_after = b.stage:is_resident(m)
        orchestra.sleep(0.6)
        return { right_after = right_after, later = b.stage:is_resident(m) }"#,
    )
    .await;
    assert_eq!(out["right_after"], true);
    assert_eq!(out["later"], false);
}

#[tokio::test]
async fn deprecated_forms_are_reported_once_at_the_scores_line() {
    let path = write_score(
        "deprecated",
        &format!(
            "{PREAMBLE}\nfor _ = 1, 3 do\n  orchestra.deprecated(\"`old.call(x)`\", \"write `new.call(x)`\")\nend\norchestra.deprecated(\"`other.call()`\", \"write `better()`\")\nreturn {{ perform = function(req) return \"\" end }}\n"
        ),
    );
    let report = orchestra::score::check(orchestra::score::ScoreSource::file(&path), options())
        .await
        .unwrap();
    let deprecated: Vec<&String> = report
        .notes
        .iter()
        .filter(|n| n.contains("deprecated:"))
        .collect();
    assert_eq!(deprecated.len(), 2, "once per form: {deprecated:?}");
    assert!(
        deprecated[0].ends_with("score.lua:13: deprecated: `old.call(x)`; write `new.call(x)`"),
        "{deprecated:?}"
    );
    assert!(deprecated[1].contains("score.lua:15: deprecated: `other.call()`"));

    // While playing, the same goes to `tracing` as a warning.
    let logs = captured_logs();
    let c = start(&path).await.unwrap();
    c.perform(Request::prompt("x")).await.unwrap();
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let warned = text
        .lines()
        .filter(|l| {
            l.contains("WARN") && l.contains("deprecated/score.lua:13: deprecated: `old.call(x)`")
        })
        .count();
    assert_eq!(warned, 1, "{text}");
}
