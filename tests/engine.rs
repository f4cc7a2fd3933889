//! The engine on real llama.cpp inference: continuous batching, cancellation, stop
//! strings, streaming, sampling and load errors, on synthetic models.

mod common;

use std::time::{Duration, Instant};

use common::{ALPHA, BETA, UNICODE, rehearsal, tiny_random};
use orchestra::engine::{
    EngineError, FinishReason, GenerateRequest, LoadOptions, Model, SamplingParams, StreamItem,
};
use orchestra::synth::TensorType;

fn opts(slots: u32) -> LoadOptions {
    LoadOptions {
        context: 256,
        slots,
        ..LoadOptions::default()
    }
}

fn greedy(prompt: &str) -> GenerateRequest {
    GenerateRequest::user(prompt)
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(64)
}

fn run(model: &Model, req: GenerateRequest) -> orchestra::engine::Completion {
    model
        .generate(req)
        .unwrap()
        .blocking_finish_with(|_| {})
        .unwrap()
}

#[test]
fn rehearsal_models_replay_their_script_in_every_tensor_type() {
    for dtype in [TensorType::F32, TensorType::F16, TensorType::Q8_0] {
        let model = Model::load(rehearsal("alpha", ALPHA, dtype), &opts(1)).unwrap();
        let c = run(&model, greedy("play something"));
        assert_eq!(c.text, ALPHA, "{dtype:?}");
        assert_eq!(c.finish_reason, FinishReason::Stop);
    }
}

/// Lengths shorter than ALPHA's nine pieces, different per request.
fn short_len(i: usize) -> u32 {
    1 + (i as u32).div_ceil(2)
}

#[test]
fn greedy_output_under_continuous_batching_equals_the_request_run_alone() {
    let model = Model::load(rehearsal("alpha", ALPHA, TensorType::Q8_0), &opts(8)).unwrap();
    let alone = run(&model, greedy("one"));
    assert_eq!(alone.text, ALPHA);
    // Eight concurrent requests with different prompts and lengths: each gets its own
    // correct output, not a neighbour's.
    let gens: Vec<_> = (0..8)
        .map(|i| {
            let req = greedy(&format!("request number {i} {}", "pad ".repeat(i)))
                .with_max_tokens(if i % 2 == 0 { 64 } else { short_len(i) });
            model.generate(req).unwrap()
        })
        .collect();
    let short = {
        let c = run(&model, greedy("x").with_max_tokens(3));
        c.text
    };
    assert!(ALPHA.starts_with(&short) && short.len() < ALPHA.len());
    for (i, g) in gens.into_iter().enumerate() {
        let c = g.blocking_finish_with(|_| {}).unwrap();
        if i % 2 == 0 {
            assert_eq!(c.text, alone.text, "request {i}");
            assert_eq!(c.finish_reason, FinishReason::Stop);
        } else {
            assert_eq!(c.completion_tokens, short_len(i) as usize, "request {i}");
            assert!(ALPHA.starts_with(&c.text), "request {i}: {:?}", c.text);
            assert_eq!(c.finish_reason, FinishReason::Length);
        }
    }
    assert_eq!(model.active_requests(), 0);
}

#[test]
fn a_new_request_joins_the_running_batch_without_waiting() {
    // A long runner: past the end of its script it starts over (ignore_eos) until its
    // 4096-token context is full, thousands of steps after the short request's ten.
    let options = LoadOptions {
        context: 4096,
        ..opts(2)
    };
    let model = Model::load(rehearsal("alpha", ALPHA, TensorType::F16), &options).unwrap();
    let mut long = model
        .generate(
            greedy("long")
                .with_max_tokens(100_000)
                .with_ignore_eos(true),
        )
        .unwrap();
    assert!(matches!(long.blocking_next(), Some(StreamItem::Text(_))));
    let short = run(&model, greedy("short"));
    assert_eq!(short.text, ALPHA);
    // The worker frees a slot before it sends `Done`, so once the short answer is in,
    // only requests still decoding count as active. An engine that ran requests one
    // after the other would have made the short one wait for the whole long one, and
    // nothing would be active now.
    assert_eq!(
        model.active_requests(),
        1,
        "the long request is still running when the short one has finished"
    );
    // And it goes on streaming.
    for _ in 0..20 {
        assert!(matches!(long.blocking_next(), Some(StreamItem::Text(_))));
    }
}

#[test]
fn random_weights_give_each_batched_request_the_answer_it_gets_alone() {
    // The rehearsal models answer from the last token alone (their attention adds
    // nothing), so they cannot show a request reading or writing a neighbour's KV
    // cells. Random weights attend over the whole context: every prompt below ends in
    // the same template tokens, yet each gets its own answer, so a request that
    // decoded against another slot's cells would answer differently.
    let prompts = [
        "the quick brown fox jumps over the lazy dog",
        "zebra",
        "one two three four five six seven eight nine ten eleven twelve",
        "a cat",
        "what is the capital of France and why",
        "x y",
    ];
    let req = |p: &str| greedy(p).with_max_tokens(24).with_ignore_eos(true);
    let path = tiny_random(TensorType::F32);
    let alone: Vec<String> = {
        let model = Model::load(&path, &opts(1)).unwrap();
        prompts.iter().map(|p| run(&model, req(p)).text).collect()
    };
    let distinct: std::collections::HashSet<&String> = alone.iter().collect();
    assert_eq!(
        distinct.len(),
        prompts.len(),
        "each prompt has its own answer alone: {alone:#?}"
    );
    // A fresh model (no prompt cache), four slots: the six requests are decoded in
    // shared batches, and the last two take slots the first ones freed.
    let model = Model::load(&path, &opts(4)).unwrap();
    let gens: Vec<_> = prompts
        .iter()
        .map(|p| model.generate(req(p)).unwrap())
        .collect();
    for (i, g) in gens.into_iter().enumerate() {
        let c = g.blocking_finish_with(|_| {}).unwrap();
        assert_eq!(c.text, alone[i], "request {i} ({:?})", prompts[i]);
        assert_eq!(c.completion_tokens, 24, "request {i}");
    }
}

#[test]
fn two_models_answer_with_their_own_scripts_side_by_side() {
    let a = Model::load(rehearsal("alpha", ALPHA, TensorType::Q8_0), &opts(2)).unwrap();
    let b = Model::load(rehearsal("beta", BETA, TensorType::Q8_0), &opts(2)).unwrap();
    let ga = a.generate(greedy("hi")).unwrap();
    let gb = b.generate(greedy("hi")).unwrap();
    assert_eq!(gb.blocking_finish_with(|_| {}).unwrap().text, BETA);
    assert_eq!(ga.blocking_finish_with(|_| {}).unwrap().text, ALPHA);
}

#[test]
fn a_cancelled_request_frees_its_slot_and_kv_cells() {
    let model = Model::load(rehearsal("alpha", ALPHA, TensorType::Q8_0), &opts(1)).unwrap();
    let mut g = model
        .generate(
            greedy("cancel me")
                .with_max_tokens(100_000)
                .with_ignore_eos(true),
        )
        .unwrap();
    assert!(matches!(g.blocking_next(), Some(StreamItem::Text(_))));
    drop(g);
    let deadline = Instant::now() + Duration::from_secs(10);
    while model.active_requests() > 0 {
        assert!(
            Instant::now() < deadline,
            "the cancelled request still holds its slot"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The only slot is free again, and its KV cells were cleared: the next request
    // decodes from position 0 and gets the full, correct answer.
    let c = run(&model, greedy("next"));
    assert_eq!(c.text, ALPHA);
}

#[test]
fn stop_strings_end_the_answer_before_them_and_max_tokens_caps_it() {
    let model = Model::load(rehearsal("alpha", ALPHA, TensorType::Q8_0), &opts(2)).unwrap();
    let c = run(&model, greedy("x").with_stop(vec!["blues".into()]));
    assert_eq!(c.text, "Alpha plays the ");
    assert_eq!(c.finish_reason, FinishReason::StopString);
    let c = run(&model, greedy("x").with_max_tokens(2));
    assert_eq!(c.completion_tokens, 2);
    assert_eq!(c.finish_reason, FinishReason::Length);
    assert!(ALPHA.starts_with(&c.text) && !c.text.is_empty());
}

#[test]
fn multibyte_characters_survive_streaming() {
    let model = Model::load(rehearsal("unicode", UNICODE, TensorType::Q8_0), &opts(1)).unwrap();
    let mut chunks = Vec::new();
    let c = model
        .generate(greedy("x"))
        .unwrap()
        .blocking_finish_with(|t| chunks.push(t.to_owned()))
        .unwrap();
    assert_eq!(chunks.concat(), UNICODE);
    assert_eq!(c.text, UNICODE);
    assert!(chunks.len() > 5, "streamed in pieces: {chunks:?}");
}

#[test]
fn a_grammar_constrains_even_a_random_model() {
    let model = Model::load(tiny_random(TensorType::F16), &opts(2)).unwrap();
    for seed in 0..4 {
        let sampling = SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            grammar: Some(r#"root ::= "yes" | "no" | "maybe""#.into()),
            ..SamplingParams::default()
        };
        let c = run(&model, greedy("?").with_sampling(sampling));
        assert!(
            ["yes", "no", "maybe"].contains(&c.text.as_str()),
            "{:?}",
            c.text
        );
    }
}

#[test]
fn the_same_seed_samples_the_same_text_and_other_seeds_other_text() {
    let model = Model::load(tiny_random(TensorType::Q8_0), &opts(2)).unwrap();
    let seeded = |seed: u32| {
        let sampling = SamplingParams {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.1,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        greedy("seeded")
            .with_sampling(sampling)
            .with_max_tokens(24)
            .with_ignore_eos(true)
    };
    let a = run(&model, seeded(42));
    let b = run(&model, seeded(42));
    assert_eq!(a.text, b.text);
    assert_eq!(a.completion_tokens, 24);
    // An engine that ignored the seed (a fixed one, or fresh entropy every time) fails
    // one of the two checks: the same seed repeats, different seeds differ.
    let texts: std::collections::HashSet<String> = [1, 2, 3, 4, 42]
        .into_iter()
        .map(|seed| run(&model, seeded(seed)).text)
        .collect();
    assert_eq!(texts.len(), 5, "each seed samples its own text: {texts:#?}");
}

#[test]
fn bad_model_files_give_clear_errors_and_the_process_goes_on() {
    let dir = common::scratch();
    let missing = dir.join("nope.gguf");
    let err = Model::load(&missing, &opts(1)).unwrap_err();
    assert!(matches!(err, EngineError::MissingFile(_)), "{err}");
    assert!(err.to_string().contains("does not exist"));

    let not_gguf = dir.join("notes.gguf");
    std::fs::write(&not_gguf, b"these are my notes, not a model").unwrap();
    let err = Model::load(&not_gguf, &opts(1)).unwrap_err();
    assert!(err.to_string().contains("not a GGUF file"), "{err}");

    let good = rehearsal("alpha", ALPHA, TensorType::Q8_0);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = Model::load(&truncated, &opts(1)).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    // And a good model still loads and plays afterwards.
    let model = Model::load(&good, &opts(1)).unwrap();
    assert_eq!(run(&model, greedy("still here")).text, ALPHA);
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_with_the_numbers() {
    let model = Model::load(rehearsal("alpha", ALPHA, TensorType::Q8_0), &opts(1)).unwrap();
    let err = model.generate(greedy(&"word ".repeat(2000))).unwrap_err();
    assert!(matches!(err, EngineError::PromptTooLong { .. }), "{err}");
    assert_eq!(run(&model, greedy("ok")).text, ALPHA);
}

#[test]
fn timings_report_time_to_first_token_and_decode_speed() {
    let model = Model::load(rehearsal("alpha", ALPHA, TensorType::Q8_0), &opts(1)).unwrap();
    let c = run(&model, greedy("time me"));
    assert!(c.timings.ttft_ms > 0.0);
    assert!(c.timings.decode_tok_s > 0.0);
    assert!(c.prompt_tokens > 0 && c.completion_tokens > 3);
}

/// Two instruments of one band on one GGUF (one batch group, as a stage loads them):
/// while one decodes, a request to the other joins that batch instead of decoding on
/// its own worker with a share of the cores, and gets the answer it gets alone. A model
/// outside the group never lends or borrows.
#[test]
fn instruments_on_one_gguf_in_one_band_batch_each_others_requests() {
    let path = tiny_random(TensorType::F32);
    let grouped = LoadOptions {
        batch_group: Some(0xba7c),
        ..opts(2)
    };
    let a = Model::load(&path, &grouped).unwrap();
    let b = Model::load(&path, &grouped).unwrap();
    let outsider = Model::load(&path, &opts(2)).unwrap();
    assert!(a.shares_weights_with(&b));
    let req = || {
        greedy("what is the capital of France and why")
            .with_max_tokens(24)
            .with_ignore_eos(true)
    };

    // With the other idle, each decodes on its own worker.
    let alone = run(&b, req());
    let b_calls = b.decode_stats().decode_calls;
    assert!(b_calls > 0);

    // While `a` decodes a long request, `b`'s request rides in `a`'s steps.
    let mut long = a
        .generate(
            greedy("a long chorus")
                .with_max_tokens(100_000)
                .with_ignore_eos(true),
        )
        .unwrap();
    assert!(matches!(long.blocking_next(), Some(StreamItem::Text(_))));
    let batched = run(&b, req());
    assert_eq!(batched.text, alone.text, "the same answer, batched");
    assert_eq!(
        b.decode_stats().decode_calls,
        b_calls,
        "b's own worker decoded nothing: its request ran in a's batch"
    );
    // Not in the group: decodes alone on its own worker even while `a` is busy.
    let outsider_calls = outsider.decode_stats().decode_calls;
    assert_eq!(run(&outsider, req()).text, alone.text);
    assert!(outsider.decode_stats().decode_calls > outsider_calls);
    drop(long);
}

#[test]
fn an_answer_cut_short_inside_a_tool_call_ends_with_length_and_no_fragment() {
    use orchestra::engine::{Tool, ToolChoice};
    let script = r#"Reading it.<tool_call>
{"name": "read", "arguments": {"path": "NOTES.md"}}
</tool_call>"#;
    let path = rehearsal("caller", script, TensorType::Q8_0);
    // Room for the tool instructions the template adds.
    let options = LoadOptions {
        context: 1024,
        ..opts(1)
    };
    let model = Model::load(&path, &options).unwrap();
    let tools = vec![Tool {
        name: "read".into(),
        description: Some("read a file".into()),
        parameters: serde_json::json!({
            "type": "object",
            "properties": { "path": { "type": "string" } },
            "required": ["path"],
        }),
    }];
    let ask = |max_tokens| {
        let req = greedy("read NOTES.md")
            .with_max_tokens(max_tokens)
            .with_tools(tools.clone(), ToolChoice::Auto);
        let mut streamed = String::new();
        let c = model
            .generate(req)
            .unwrap()
            .blocking_finish_with(|t| streamed.push_str(t))
            .unwrap();
        (c, streamed)
    };
    // Room for all of it: one call.
    let (whole, _) = ask(64);
    assert_eq!(whole.finish_reason, FinishReason::ToolCalls);
    assert_eq!(whole.tool_calls.len(), 1, "{whole:?}");
    assert_eq!(whole.tool_calls[0].name, "read");
    // Cut inside the call: `length`, no call, and neither the answer nor the stream
    // carries a piece of it.
    for max_tokens in [6, 10, 14] {
        let (cut, streamed) = ask(max_tokens);
        assert_eq!(
            cut.finish_reason,
            FinishReason::Length,
            "{max_tokens}: {cut:?}"
        );
        assert!(cut.tool_calls.is_empty(), "{max_tokens}: {cut:?}");
        for text in [&cut.text, &streamed] {
            assert!(
                !text.contains("<tool") && !text.contains('{'),
                "{max_tokens}: a fragment of the call got out: {text:?}"
            );
        }
        assert!(
            cut.text.starts_with("Reading"),
            "{max_tokens}: {:?}",
            cut.text
        );
    }
}
