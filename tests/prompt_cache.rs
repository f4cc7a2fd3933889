//! Prompt caching: a slot keeps its KV cells after a request, and the next request
//! takes the free slot sharing the longest token prefix with its prompt, decoding only
//! the rest — with the same greedy answer as without the cache. On real llama.cpp
//! inference with a random-weights model (attention matters, so a wrong cache shows).

mod common;

use common::tiny_random;
use orchestra::engine::{Completion, GenerateRequest, LoadOptions, Model, SamplingParams};
use orchestra::synth::TensorType;

fn load(slots: u32) -> Model {
    let opts = LoadOptions {
        context: 256,
        slots,
        ..LoadOptions::default()
    };
    Model::load(tiny_random(TensorType::F32), &opts).unwrap()
}

fn run(model: &Model, prompt: &str) -> Completion {
    let req = GenerateRequest::raw(prompt)
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(12);
    model
        .generate(req)
        .unwrap()
        .blocking_finish_with(|_| {})
        .unwrap()
}

const TALK: &str =
    "the band plays a long conversation about swing, bebop and the blues, turn after turn, ";

#[test]
fn a_shared_prefix_is_decoded_once_and_the_answer_is_unchanged() {
    let cached = load(1);
    let first = run(&cached, TALK);
    assert_eq!(
        first.cached_tokens, 0,
        "nothing cached before the first request"
    );
    let longer = format!("{TALK}and then a quiet ballad");
    let second = run(&cached, &longer);
    let prefix = cached.tokenize(TALK, true).len();
    assert!(
        second.cached_tokens + 2 >= prefix && second.cached_tokens > 10,
        "reused {} of a {prefix}-token prefix",
        second.cached_tokens
    );
    assert!(second.cached_tokens < second.prompt_tokens);
    // The same request on a model with nothing cached answers the same.
    let fresh = load(1);
    assert_eq!(run(&fresh, &longer).cached_tokens, 0);
    assert_eq!(second.text, run(&load(1), &longer).text);
}

#[test]
fn the_same_prompt_again_reuses_all_but_its_last_token() {
    let model = load(1);
    let a = run(&model, TALK);
    let b = run(&model, TALK);
    assert_eq!(b.cached_tokens, b.prompt_tokens - 1);
    assert_eq!(a.text, b.text);
}

#[test]
fn a_different_conversation_invalidates_the_cache() {
    let model = load(1);
    run(&model, TALK);
    let other = "zebra quartet numbers: 9 8 7 6 5 4 3 2 1 0, counting down slowly";
    let c = run(&model, other);
    // Only the BOS token can be shared.
    assert!(
        c.cached_tokens <= 1,
        "reused {} tokens of another prompt",
        c.cached_tokens
    );
    assert_eq!(c.text, run(&load(1), other).text);
}

#[test]
fn a_request_goes_to_the_slot_holding_its_prefix() {
    let model = load(2);
    let other = "zebra quartet numbers: 9 8 7 6 5 4 3 2 1 0, counting down slowly";
    // Two slots, two conversations: each request goes back to its own.
    run(&model, TALK);
    run(&model, other);
    let a = run(&model, &format!("{TALK}then a ballad"));
    let b = run(&model, &format!("{other} and up again"));
    assert!(a.cached_tokens > 10, "{}", a.cached_tokens);
    assert!(b.cached_tokens > 10, "{}", b.cached_tokens);
}
