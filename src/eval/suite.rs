//! Benchmark suites: a list of problems, each with the request a model is sent and how
//! its answer is checked. A new suite is a data file plus a [`Check`] variant: HumanEval
//! (Python functions checked by their unit tests in the [`super::Sandbox`]) and the
//! routing set (prompts labelled with the section that should play them, checked
//! against the router's pick). Owns the one prompt wording and the code extraction.

use std::path::Path;

use serde_json::Value;

use super::EvalError;

/// The routing set shipped with orchestra: prompts labelled code, creative or analysis.
pub const ROUTING_DATA: &str = include_str!("data/routing.jsonl");

/// The instruction every model id (and every peer server) gets for a HumanEval problem,
/// followed by the problem's prompt in a ```python block. One wording for all, because
/// the wording moves pass@1: compare numbers taken with the same one.
pub const HUMANEVAL_INSTRUCTION: &str = "Complete the following Python function. Reply with the whole function (imports, signature and body) in one ```python code block.";

/// How an answer is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// HumanEval: the answer's code, with the problem's prompt before it, runs with the
    /// `test` code and `check(entry_point)` in the sandbox.
    Python {
        /// The function signature and docstring the model completes.
        prompt: String,
        /// Defines `check(candidate)`.
        test: String,
        entry_point: String,
    },
    /// Routing: the section the router should pick.
    Section(String),
}

/// One problem of a suite.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// `HumanEval/0`, `routing/017`.
    pub id: String,
    /// The user message sent to the model (or the router).
    pub request: String,
    pub check: Check,
}

/// Which suite: the kinds `--suite` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuiteKind {
    HumanEval,
    Routing,
}

impl SuiteKind {
    pub fn name(self) -> &'static str {
        match self {
            SuiteKind::HumanEval => "humaneval",
            SuiteKind::Routing => "routing",
        }
    }
}

/// A loaded suite.
#[derive(Debug, Clone)]
pub struct Suite {
    pub kind: SuiteKind,
    pub problems: Vec<Problem>,
}

impl Suite {
    /// Reads a suite's data: HumanEval JSON lines (`task_id`, `prompt`, `test`,
    /// `entry_point`) or routing JSON lines (`id`, `prompt`, `section`).
    pub fn parse(kind: SuiteKind, jsonl: &str, origin: &str) -> Result<Suite, EvalError> {
        let mut problems = Vec::new();
        for (i, line) in jsonl.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |reason: String| EvalError::Data {
                origin: origin.to_string(),
                line: i + 1,
                reason,
            };
            let v: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
            let field = |k: &str| -> Result<String, EvalError> {
                v.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("the field `{k}` is missing or not a string")))
            };
            problems.push(match kind {
                SuiteKind::HumanEval => {
                    let prompt = field("prompt")?;
                    Problem {
                        id: field("task_id")?,
                        request: humaneval_request(&prompt),
                        check: Check::Python {
                            prompt,
                            test: field("test")?,
                            entry_point: field("entry_point")?,
                        },
                    }
                }
                SuiteKind::Routing => Problem {
                    id: field("id")?,
                    request: field("prompt")?,
                    check: Check::Section(field("section")?),
                },
            });
        }
        if problems.is_empty() {
            return Err(EvalError::Data {
                origin: origin.to_string(),
                line: 0,
                reason: "it holds no problems".into(),
            });
        }
        Ok(Suite { kind, problems })
    }

    /// The shipped routing set.
    pub fn routing() -> Suite {
        Suite::parse(
            SuiteKind::Routing,
            ROUTING_DATA,
            "src/eval/data/routing.jsonl",
        )
        .expect("the shipped routing set parses")
    }

    /// Loads a suite from a file (`.jsonl`, or `.jsonl.gz` for HumanEval's own file).
    pub fn from_file(kind: SuiteKind, path: &Path) -> Result<Suite, EvalError> {
        let text = super::data::read_jsonl(path)?;
        Suite::parse(kind, &text, &path.display().to_string())
    }

    /// Keeps every `every`-th problem (1: all), then the first `limit`.
    pub fn select(mut self, limit: Option<usize>, every: usize) -> Suite {
        let every = every.max(1);
        self.problems = self
            .problems
            .into_iter()
            .step_by(every)
            .take(limit.unwrap_or(usize::MAX))
            .collect();
        self
    }
}

/// The user message for a HumanEval prompt: [`HUMANEVAL_INSTRUCTION`] and the prompt
/// in a ```python block.
pub fn humaneval_request(prompt: &str) -> String {
    format!(
        "{HUMANEVAL_INSTRUCTION}\n\n```python\n{}\n```",
        prompt.trim_end()
    )
}

/// The code in an answer: the first fenced block that defines `entry_point`, else the
/// first fenced block (an unclosed one runs to the end), else the whole text.
pub fn extract_code(answer: &str, entry_point: &str) -> String {
    let blocks = fenced_blocks(answer);
    let defines = |code: &str| defines(code, entry_point);
    if let Some(b) = blocks.iter().find(|b| defines(b)) {
        return b.clone();
    }
    if let Some(b) = blocks.first() {
        return b.clone();
    }
    answer.to_string()
}

/// Whether `code` defines the function `name` (a `def name(` at any indentation).
pub fn defines(code: &str, name: &str) -> bool {
    code.lines().any(|l| {
        let t = l.trim_start();
        t.strip_prefix("def ")
            .or_else(|| t.strip_prefix("async def "))
            .is_some_and(|rest| {
                rest.trim_start()
                    .strip_prefix(name)
                    .is_some_and(|r| r.trim_start().starts_with('('))
            })
    })
}

fn fenced_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        // The info string (`python`, `py`, nothing) runs to the end of the line.
        let body_start = after.find('\n').map_or(after.len(), |i| i + 1);
        let body = &after[body_start..];
        match body.find("```") {
            Some(end) => {
                out.push(body[..end].to_string());
                rest = &body[end + 3..];
            }
            None => {
                out.push(body.to_string());
                break;
            }
        }
    }
    out.retain(|b| !b.trim().is_empty());
    out
}

/// The program the sandbox runs for a HumanEval answer: the prompt (its imports, helper
/// functions and the signature with its docstring, which is a valid function on its
/// own), the extracted code — a whole function redefines the entry point, a bare body
/// completes the prompt's — then the tests and `check(entry_point)`.
pub fn humaneval_program(prompt: &str, test: &str, entry_point: &str, answer: &str) -> String {
    let code = extract_code(answer, entry_point);
    let joined = if defines(&code, entry_point) {
        format!("{}\n\n{}", prompt.trim_end(), code)
    } else {
        format!("{prompt}{code}")
    };
    format!("{joined}\n\n{test}\n\ncheck({entry_point})\n")
}
