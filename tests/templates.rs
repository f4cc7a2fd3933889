//! Chat templates render as Python's jinja2 renders them. The expected prompts under
//! `tests/data/templates/expected/` were made by `tests/data/templates/render.py`
//! (jinja2 3.1 in the environment `transformers` uses for `apply_chat_template`) from
//! the published templates in that folder (see its README.md) and the conversations
//! in `cases.json`; rerun it after changing either. This test only reads them.

mod common;

use std::path::{Path, PathBuf};

use orchestra::engine::{
    ChatMessage, ChatTemplate, EngineError, Family, TemplateSource, Tool, ToolCall, ToolFormat,
    choose_template,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Spec {
    templates: std::collections::BTreeMap<String, TemplateSpec>,
    tools: Vec<Tool>,
    cases: std::collections::BTreeMap<String, Case>,
}

#[derive(Deserialize)]
struct TemplateSpec {
    file: String,
    bos: String,
    eos: String,
    tools: bool,
}

#[derive(Deserialize)]
struct Case {
    tools: bool,
    messages: Vec<ChatMessage>,
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/templates")
}

fn spec() -> Spec {
    let text = std::fs::read_to_string(data().join("cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn compile(name: &str, t: &TemplateSpec) -> ChatTemplate {
    let source = std::fs::read_to_string(data().join(&t.file)).unwrap();
    ChatTemplate::new(name, &source, &t.bos, &t.eos).unwrap()
}

#[test]
fn published_templates_render_as_jinja2_renders_them() {
    let spec = spec();
    let mut compared = 0;
    for (tname, t) in &spec.templates {
        let template = compile(tname, t);
        for (cname, case) in &spec.cases {
            if case.tools && !t.tools {
                continue;
            }
            let tools: &[Tool] = if case.tools { &spec.tools } else { &[] };
            let got = template.render(&case.messages, tools, true);
            let expected = |ext: &str| data().join(format!("expected/{tname}__{cname}.{ext}"));
            if let Ok(want) = std::fs::read_to_string(expected("txt")) {
                let got = got.unwrap_or_else(|e| panic!("{tname} / {cname}: {e}"));
                assert_eq!(got, want, "{tname} / {cname}");
            } else {
                let want = std::fs::read_to_string(expected("error")).unwrap_or_else(|_| {
                    panic!("{tname} / {cname}: no expected file: run render.py")
                });
                let err = got.expect_err(&format!("{tname} / {cname}: jinja2 raised `{want}`"));
                assert!(err.to_string().contains(&want), "{tname} / {cname}: {err}");
            }
            compared += 1;
        }
    }
    assert!(compared >= 20, "only {compared} renderings compared");
}

#[test]
fn published_templates_teach_their_tool_formats() {
    let spec = spec();
    let cases = [
        ("qwen2.5", ToolFormat::Hermes),
        ("llama3.1", ToolFormat::Llama3),
        ("mistral-v0.3", ToolFormat::Mistral),
        ("gemma3", ToolFormat::Hermes),
    ];
    for (name, want) in cases {
        assert_eq!(
            compile(name, &spec.templates[name]).tool_format(),
            want,
            "{name}"
        );
    }
}

#[test]
fn templates_without_tools_get_instructions_and_flattened_tool_turns() {
    let spec = spec();
    let gemma = compile("gemma3", &spec.templates["gemma3"]);
    let case = &spec.cases["tool_call_and_result"];
    let out = gemma.render(&case.messages, &spec.tools, true).unwrap();
    assert!(
        out.starts_with("<bos><start_of_turn>user\n# Tools"),
        "{out}"
    );
    assert!(out.contains("\"name\": \"get_weather\""), "{out}");
    assert!(
        out.contains("<start_of_turn>model\n<tool_call>\n{\"name\":\"get_weather\""),
        "{out}"
    );
    assert!(
        out.contains("<start_of_turn>user\n<tool_response>\n{\"temperature_c\""),
        "{out}"
    );
    assert!(out.ends_with("<start_of_turn>model\n"), "{out}");
}

#[test]
fn mistral_tool_call_ids_are_shortened_to_nine_characters() {
    let spec = spec();
    let mistral = compile("mistral-v0.3", &spec.templates["mistral-v0.3"]);
    let messages = vec![
        ChatMessage::user("Weather in Paris?"),
        ChatMessage {
            role: "assistant".into(),
            tool_calls: vec![ToolCall {
                id: "call_Xy12ab34Z".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            }],
            ..ChatMessage::default()
        },
        ChatMessage {
            role: "tool".into(),
            content: "sunny".into(),
            tool_call_id: Some("call_Xy12ab34Z".into()),
            ..ChatMessage::default()
        },
    ];
    let out = mistral.render(&messages, &spec.tools, true).unwrap();
    assert!(out.contains(r#""id": "Xy12ab34Z"}]"#), "{out}");
    assert!(out.contains(r#""call_id": "Xy12ab34Z"}"#), "{out}");
}

#[test]
fn architecture_defaults_speak_each_family() {
    let none = |_: &str| false;
    let llama3 = |t: &str| t == "<|start_header_id|>";
    let conversation = [ChatMessage::system("Be brief."), ChatMessage::user("Hi")];
    type HasToken<'a> = &'a dyn Fn(&str) -> bool;
    let cases: [(&str, HasToken, &str); 4] = [
        (
            "gemma3",
            &none,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n",
        ),
        (
            "llama",
            &llama3,
            "<bos><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        ),
        ("mistral", &none, "<bos>[INST] Be brief.\n\nHi[/INST]"),
        (
            "qwen2",
            &none,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        ),
    ];
    for (arch, has, want) in cases {
        let (source, origin, reason) = choose_template(None, None, arch, has);
        assert!(
            matches!(origin, TemplateSource::ArchitectureDefault(_)),
            "{arch}"
        );
        assert!(reason.contains(arch), "{reason}");
        let t = ChatTemplate::new(arch, &source, "<bos>", "<eos>").unwrap();
        assert_eq!(t.render(&conversation, &[], true).unwrap(), want, "{arch}");
    }
    let (_, origin, _) = choose_template(None, None, "gemma3", &none);
    assert_eq!(origin, TemplateSource::ArchitectureDefault(Family::Gemma));
    assert_eq!(origin.to_string(), "architecture default: gemma");
}

#[test]
fn override_wins_and_a_broken_gguf_template_falls_back() {
    let none = |_: &str| false;
    let (source, origin, _) = choose_template(Some("{{ 'x' }}"), Some("gguf"), "llama", &none);
    assert_eq!(
        (source.as_str(), origin.to_string().as_str()),
        ("{{ 'x' }}", "score override")
    );
    let (_, origin, _) = choose_template(None, Some("{{ messages }}"), "gemma3", &none);
    assert_eq!(origin, TemplateSource::Gguf);
    let (_, origin, reason) = choose_template(None, Some("{% for %}"), "gemma3", &none);
    assert_eq!(origin, TemplateSource::ArchitectureDefault(Family::Gemma));
    assert!(reason.contains("does not compile"), "{reason}");
}

#[test]
fn render_errors_name_the_model_and_the_template_line() {
    let t = ChatTemplate::new(
        "tiny",
        "{{ bos_token }}\n{{ raise_exception('no system prompts') }}",
        "",
        "",
    )
    .unwrap();
    let err = t.render(&[ChatMessage::user("hi")], &[], true).unwrap_err();
    assert!(matches!(err, EngineError::Template { .. }));
    let text = err.to_string();
    assert!(text.contains("`tiny`"), "{text}");
    assert!(text.contains("line 2"), "{text}");
    assert!(text.contains("no system prompts"), "{text}");
    let err = ChatTemplate::new("tiny", "{% if %}", "", "").unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn python_isms_work() {
    let source = "{%- set ns = namespace(n=0) %}\
        {%- for m in messages %}{% set ns.n = ns.n + 1 %}\
        {{- m.content.strip().upper() if m.content.startswith(' ') else m.content }}\
        {%- if not loop.last %}|{% endif %}{% endfor %}\
        {{- '#' ~ ns.n ~ ' ' ~ {'a': [1, 2.5]} | tojson }}";
    let t = ChatTemplate::new("py", source, "", "").unwrap();
    let out = t
        .render(
            &[ChatMessage::user(" hi "), ChatMessage::user("x")],
            &[],
            false,
        )
        .unwrap();
    assert_eq!(out, "HI|x#2 {\"a\": [1, 2.5]}");
}

#[test]
#[ignore = "needs the real test models: scripts/fetch-test-models"]
fn qwen_gguf_template_is_the_stored_one() {
    let path = common::real::real_model(common::real::Real::Qwen);
    let h = orchestra::gguf::read_header(&path).unwrap();
    let stored = std::fs::read_to_string(data().join("qwen2.5.jinja")).unwrap();
    assert_eq!(h.chat_template(), Some(stored.as_str()));
}
