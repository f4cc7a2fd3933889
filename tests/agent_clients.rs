//! The clients agents and apps are built on — the openai-agents SDK, LangChain,
//! instructor — against `orchestra serve` on the real Qwen2.5-Coder-0.5B, through the
//! arrangement as shipped (`arrange.perform`: an agent's turn is the soloist's, and
//! tool calls pass the score's policy). The checks are `tests/agent_clients/checks.py`.

mod serve_support;

use orchestra::server::ServeConfig;
use serve_support::*;

/// A band whose code soloist is the real Qwen, played through `arrange.perform`.
fn qwen_band(test: &str) -> std::path::PathBuf {
    let qwen = real::real_model(real::Real::Qwen);
    let dir = scratch().join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let score = dir.join("score.lua");
    std::fs::write(
        &score,
        format!(
            r#"local arrange = require("orchestra.arrange")
local route = require("orchestra.route")
local band = orchestra.band {{ memory = "4GiB", sections = {{ "code", "review" }} }}
band:add("qwen", {{ model = "{}", section = "code", context = 8192, slots = 2,
  sampling = {{ temperature = 0 }} }})
local router = route.rules({{ {{ otherwise = "code" }} }}, {{ band = band }})
return {{ perform = function(req) return arrange.perform(band, req, {{ router = router }}) end }}
"#,
            qwen.display()
        ),
    )
    .unwrap();
    score
}

fn check_on_qwen(test: &str, checks: &'static [&'static str]) {
    let score = qwen_band(test);
    runtime().block_on(async {
        let s = serve_file(&score, ServeConfig::default()).await;
        let url = s.url.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec![url.as_str(), "orchestra"];
            args.extend_from_slice(checks);
            run_python_checks("tests/agent_clients/checks.py", &args)
        })
        .await
        .unwrap();
    });
}

#[test]
#[ignore = "needs the real test models and the openai-agents package: scripts/fetch-test-models; pip install openai-agents"]
fn the_openai_agents_sdk_runs_a_tool_turn_to_its_end() {
    check_on_qwen("clients-agents", &["agents"]);
}

#[test]
#[ignore = "needs the real test models and langchain-openai: scripts/fetch-test-models; pip install langchain-openai"]
fn langchain_bind_tools_gets_a_tool_call() {
    check_on_qwen("clients-langchain", &["langchain"]);
}

#[test]
#[ignore = "needs the real test models and instructor: scripts/fetch-test-models; pip install instructor"]
fn instructor_fills_a_pydantic_model() {
    check_on_qwen("clients-instructor", &["instructor"]);
}
