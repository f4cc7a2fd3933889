//! Tool calling and chat templates on real models: Qwen2.5-Coder-0.5B-Instruct calls
//! a `get_weather` tool through its own template and a lazy grammar, and Gemma 3 270M
//! (no template in its GGUF) is prompted in Gemma turns. Each model loads once per
//! binary.

mod common;

use std::sync::OnceLock;

use common::real::{Real, real_model};
use orchestra::engine::{
    ChatMessage, Completion, FinishReason, GenerateRequest, LoadOptions, Model, SamplingParams,
    TemplateSource, Tool, ToolChoice,
};
use serde_json::{Value, json};

fn load(which: Real) -> Model {
    let options = LoadOptions {
        context: 2048,
        slots: 2,
        ..LoadOptions::default()
    };
    Model::load(real_model(which), &options).expect("the real model loads")
}

fn qwen() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| load(Real::Qwen))
}

fn gemma() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| load(Real::Gemma))
}

fn weather_tool() -> Tool {
    Tool {
        name: "get_weather".into(),
        description: Some("Get the current weather in a city".into()),
        parameters: json!({
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city, e.g. London"}},
            "required": ["city"],
        }),
    }
}

fn ask_weather() -> Vec<ChatMessage> {
    vec![ChatMessage::user(
        "What is the weather like in Paris today?",
    )]
}

/// Run a request; returns the completion and the text that was streamed.
fn run(model: &Model, request: GenerateRequest) -> (Completion, String) {
    let mut streamed = String::new();
    let c = model
        .generate(request)
        .unwrap()
        .blocking_finish_with(|t| streamed.push_str(t))
        .unwrap();
    (c, streamed)
}

/// The arguments of a `get_weather` call, checked against its schema: an object with
/// a string `city` and nothing else.
fn city_of(arguments: &str) -> String {
    let v: Value = serde_json::from_str(arguments)
        .unwrap_or_else(|e| panic!("arguments `{arguments}` are not JSON: {e}"));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("`{arguments}` is not an object"));
    assert!(
        obj.keys().all(|k| k == "city"),
        "unexpected keys in `{arguments}`"
    );
    obj.get("city")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("`{arguments}` has no string `city`"))
        .to_owned()
}

#[test]
#[ignore = "needs the real test models: scripts/fetch-test-models"]
fn qwen_calls_get_weather_for_paris() {
    let model = qwen();
    assert_eq!(model.template_info().source, TemplateSource::Gguf);
    let request = GenerateRequest::chat(ask_weather())
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(128)
        .with_tools(vec![weather_tool()], ToolChoice::Auto);
    let prompt = model.render_prompt(&request).unwrap();
    assert!(
        prompt.contains("<tools>") && prompt.contains("get_weather"),
        "{prompt}"
    );
    let (c, streamed) = run(model, request);
    assert_eq!(c.finish_reason, FinishReason::ToolCalls, "{c:?}");
    assert_eq!(c.tool_calls.len(), 1, "{c:?}");
    let call = &c.tool_calls[0];
    assert_eq!(call.name, "get_weather");
    assert!(call.id.starts_with("call_"), "{}", call.id);
    assert!(
        city_of(&call.arguments).contains("Paris"),
        "{}",
        call.arguments
    );
    assert!(
        !streamed.contains("<tool_call>") && !streamed.contains("get_weather"),
        "{streamed:?}"
    );
    assert!(!c.text.contains("<tool_call>"), "{:?}", c.text);
}

/// Qwen2.5-Coder-0.5B calls `get_weather` again after its result under `auto` (a
/// limit of the 0.5B model, greedy or sampled); a client that wants the final answer
/// asks with `tool_choice: none`, as agents do after a tool round.
#[test]
#[ignore = "needs the real test models: scripts/fetch-test-models"]
fn qwen_answers_in_text_from_the_tool_result() {
    let model = qwen();
    let mut messages = ask_weather();
    messages.push(ChatMessage {
        role: "assistant".into(),
        tool_calls: vec![orchestra::engine::ToolCall {
            id: "call_abc123def".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        }],
        ..ChatMessage::default()
    });
    messages.push(ChatMessage {
        role: "tool".into(),
        content: r#"{"city": "Paris", "temperature_c": 23, "sky": "sunny"}"#.into(),
        tool_call_id: Some("call_abc123def".into()),
        name: Some("get_weather".into()),
        ..ChatMessage::default()
    });
    let request = GenerateRequest::chat(messages)
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(96)
        .with_tools(vec![weather_tool()], ToolChoice::None);
    let prompt = model.render_prompt(&request).unwrap();
    assert!(
        prompt.contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"),
        "{prompt}"
    );
    assert!(
        prompt.contains("<tool_response>\n{\"city\": \"Paris\", \"temperature_c\": 23"),
        "{prompt}"
    );
    let (c, streamed) = run(model, request);
    assert!(c.tool_calls.is_empty(), "{c:?}");
    assert_ne!(c.finish_reason, FinishReason::ToolCalls);
    assert!(
        c.text.contains("23") || c.text.to_lowercase().contains("sunny"),
        "{:?}",
        c.text
    );
    assert_eq!(streamed, c.text);
}

#[test]
#[ignore = "needs the real test models: scripts/fetch-test-models"]
fn qwen_required_tool_choice_always_calls() {
    let model = qwen();
    let questions = [
        "Hello! How are you?",
        "Write a haiku about the sea.",
        "What is 2 + 2?",
    ];
    for q in questions {
        for choice in [
            ToolChoice::Required,
            ToolChoice::Function("get_weather".into()),
        ] {
            let request = GenerateRequest::chat(vec![ChatMessage::user(q)])
                .with_sampling(SamplingParams::greedy())
                .with_max_tokens(96)
                .with_tools(vec![weather_tool()], choice.clone());
            let (c, _) = run(model, request);
            // It calls; a model that keeps calling until `max_tokens` ends `length`,
            // with its whole calls and no fragment of the cut one.
            assert!(
                c.finish_reason == FinishReason::ToolCalls
                    || (c.finish_reason == FinishReason::Length && c.completion_tokens == 96),
                "{q} {choice:?}: {c:?}"
            );
            assert!(!c.text.contains("\"name\""), "{q} {choice:?}: {c:?}");
            assert_eq!(c.tool_calls[0].name, "get_weather");
            city_of(&c.tool_calls[0].arguments);
        }
    }
}

#[test]
#[ignore = "needs the real test models: scripts/fetch-test-models"]
fn qwen_sampled_calls_always_have_schema_valid_arguments() {
    let model = qwen();
    for seed in 1..=20 {
        let sampling = SamplingParams {
            temperature: 0.8,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        let request = GenerateRequest::chat(ask_weather())
            .with_sampling(sampling)
            .with_max_tokens(128)
            .with_tools(vec![weather_tool()], ToolChoice::Required);
        let (c, _) = run(model, request);
        assert!(
            c.finish_reason == FinishReason::ToolCalls
                || (c.finish_reason == FinishReason::Length && c.completion_tokens == 128),
            "seed {seed}: {c:?}"
        );
        assert!(!c.tool_calls.is_empty(), "seed {seed}: {c:?}");
        assert!(!c.text.contains("\"name\""), "seed {seed}: {c:?}");
        for call in &c.tool_calls {
            assert_eq!(call.name, "get_weather", "seed {seed}");
            city_of(&call.arguments);
        }
    }
}

#[test]
#[ignore = "needs the real test models: scripts/fetch-test-models"]
fn gemma_is_prompted_in_gemma_turns() {
    let model = gemma();
    let info = model.template_info();
    assert_eq!(
        info.source.to_string(),
        "architecture default: gemma",
        "{info}"
    );
    let request = GenerateRequest::chat(vec![
        ChatMessage::system("You are a helpful assistant."),
        ChatMessage::user("Name a colour."),
    ])
    .with_sampling(SamplingParams::greedy())
    .with_max_tokens(32);
    let prompt = model.render_prompt(&request).unwrap();
    assert!(
        prompt.contains("<start_of_turn>user\nYou are a helpful assistant.\n\nName a colour.<end_of_turn>\n<start_of_turn>model\n"),
        "{prompt}"
    );
    assert!(!prompt.contains("<|im_start|>"), "{prompt}");
    let (c, _) = run(model, request);
    assert!(!c.text.contains("<|im_start|>"), "{:?}", c.text);
}
