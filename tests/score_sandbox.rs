//! Safety for shared scores: every escape attempt is refused with a clear error, an
//! explicit flag allows more, and runaway loops and memory bombs are stopped while the
//! same conductor goes on serving the next request.

mod score_support;

use std::time::{Duration, Instant};

use orchestra::score::{Conductor, Request, Sandbox, ScoreError, ScoreOptions, ScoreSource};
use score_support::*;

/// (what the score tries, what the error must say).
const ESCAPES: &[(&str, &str)] = &[
    (
        r#"os.execute("echo hi")"#,
        "`os.execute` is disabled in shared scores (it runs programs)",
    ),
    (
        r#"io.popen("ls")"#,
        "`io.popen` is disabled in shared scores (it runs programs)",
    ),
    (
        r#"io.open("/etc/passwd")"#,
        "`io.open`: `/etc/passwd` is outside the score's folder",
    ),
    (
        r#"io.open("../escape.txt", "w")"#,
        "is outside the score's folder",
    ),
    (
        r#"io.lines("/etc/passwd")"#,
        "`io.lines`: `/etc/passwd` is outside the score's folder",
    ),
    (
        r#"io.input("/etc/passwd")"#,
        "`io.input`: `/etc/passwd` is outside the score's folder",
    ),
    (
        r#"io.output("/tmp/orchestra-escape.txt")"#,
        "is outside the score's folder",
    ),
    (
        r#"package.loadlib("libc.so.6", "puts")"#,
        "`package.loadlib` is disabled in shared scores",
    ),
    (
        r#"require("socket.core")"#,
        "module `socket.core` not found",
    ),
    (r#"require("..secret")"#, "`..secret` is not a module name"),
    (
        r#"loadfile("/etc/passwd")"#,
        "`loadfile` is disabled in shared scores",
    ),
    (
        r#"dofile("/etc/passwd")"#,
        "`dofile` is disabled in shared scores",
    ),
    (
        r#"string.dump(print)"#,
        "`string.dump` is disabled in shared scores",
    ),
    (
        r#"load("return 1", "x", "b")"#,
        "`load` accepts text chunks only in shared scores",
    ),
    (
        r#"os.getenv("HOME")"#,
        "`os.getenv` is disabled in shared scores",
    ),
    (r#"os.exit(1)"#, "`os.exit` is disabled in shared scores"),
    (
        r#"os.remove("score.lua")"#,
        "`os.remove` is disabled in shared scores",
    ),
    (
        r#"os.rename("score.lua", "x.lua")"#,
        "`os.rename` is disabled in shared scores",
    ),
    (
        r#"setmetatable({}, { __gc = function() end })"#,
        "`__gc` finalizers are disabled in shared scores",
    ),
    (r#"collectgarbage("stop")"#, "is disabled in shared scores"),
    (
        r#"debug.getregistry()"#,
        "`debug.getregistry` is disabled in shared scores",
    ),
    (
        r#"debug.sethook()"#,
        "`debug.sethook` is disabled in shared scores",
    ),
];

#[tokio::test]
async fn every_escape_attempt_is_refused_with_a_clear_error() {
    let mut body = String::from("local out = {}\n");
    for (i, (code, _)) in ESCAPES.iter().enumerate() {
        body.push_str(&format!(
            "out[{}] = select(2, pcall(function() local r = {code}; return r end)) or \"allowed!\"\n",
            i + 1
        ));
    }
    body.push_str("return out");
    let out = play_json("escapes", &body).await;
    for (i, (code, expected)) in ESCAPES.iter().enumerate() {
        let got = out[i].as_str().unwrap_or("");
        assert!(
            got.contains(expected),
            "`{code}`: expected “{expected}”, got “{got}”"
        );
        assert!(
            got.contains("score.lua:"),
            "`{code}`: the error names the line: {got}"
        );
    }
}

#[tokio::test]
async fn binary_chunks_do_not_load_even_without_a_mode() {
    let out = play_json(
        "binary",
        r#"local f, err = load("\27Lua\84\0")
        return { loaded = f ~= nil, err = err }"#,
    )
    .await;
    assert_eq!(out["loaded"], false);
    assert!(out["err"].as_str().unwrap().contains("binary"), "{out}");
}

#[tokio::test]
async fn files_in_the_scores_own_folder_are_fine() {
    let out = play_json(
        "own_folder",
        r#"local f = assert(io.open("notes.txt", "w"))
        f:write("take five")
        f:close()
        local lines = {}
        for l in io.lines("notes.txt") do lines[#lines + 1] = l end
        local g = assert(io.open("notes.txt"))
        local all = g:read("a")
        g:close()
        return { all = all, first = lines[1], time = os.time() > 0, traceback = type(debug.traceback("x")) }"#,
    )
    .await;
    assert_eq!(out["all"], "take five");
    assert_eq!(out["first"], "take five");
    assert_eq!(out["time"], true);
    assert_eq!(out["traceback"], "string");
}

#[tokio::test]
async fn the_unsafe_flag_gives_back_the_whole_standard_library() {
    let path = write_score(
        "trusted",
        &score_with(
            r#"local f = assert(io.open("/etc/hostname") or io.open("/etc/passwd"))
            f:close()
            return { home = os.getenv("HOME") ~= nil, debug = type(debug.getinfo), sandbox = orchestra.sandbox }"#,
        ),
    );
    let c = Conductor::start(
        ScoreSource::file(&path),
        options().with_sandbox(Sandbox::Trusted),
    )
    .await
    .unwrap();
    let out = c.perform(Request::prompt("x")).await.unwrap().data;
    assert_eq!(out["home"], true);
    assert_eq!(out["debug"], "function");
    assert_eq!(out["sandbox"], "trusted");
}

fn limited() -> ScoreOptions {
    options().with_cpu_limit(Duration::from_millis(200))
}

async fn start_limited(test: &str, body: &str) -> Conductor {
    let path = write_score(test, &score_with(body));
    Conductor::start(ScoreSource::file(&path), limited())
        .await
        .unwrap()
}

/// A score whose request `x` runs `runaway` and whose other requests answer "fine".
fn runaway_score(runaway: &str) -> String {
    format!("if req.prompt == \"x\" then\n{runaway}\nend\nreturn \"fine\"")
}

/// (name, the loop)
const RUNAWAYS: &[(&str, &str)] = &[
    ("plain", "while true do end"),
    (
        "pcall",
        "while true do pcall(function() while true do end end) end",
    ),
    (
        "sort_comparator",
        "table.sort({ 3, 2, 1, 5, 4 }, function(a, b) while true do pcall(function() end) end end)",
    ),
    (
        "coroutine",
        "local co = coroutine.wrap(function() while true do end end)\nco()",
    ),
    (
        "string_gsub",
        "string.gsub(string.rep(\"a\", 10), \"a\", function() while true do end end)",
    ),
    (
        "close_handler",
        "local guard <close> = setmetatable({}, { __close = function() while true do end end })\nwhile true do end",
    ),
];

#[tokio::test]
async fn runaway_loops_are_stopped_and_the_next_request_is_served() {
    for (name, runaway) in RUNAWAYS {
        let c = start_limited(&format!("runaway_{name}"), &runaway_score(runaway)).await;
        let t = Instant::now();
        let err = match c.perform(Request::prompt("x")).await {
            Err(e) => e,
            Ok(a) => panic!("{name}: the runaway request was stopped, but it answered {a:?}"),
        };
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{name}: stopped in {:?}",
            t.elapsed()
        );
        let ScoreError::CpuLimit { location, .. } = &err else {
            panic!("{name}: a CPU-limit error, got: {err}")
        };
        let msg = err.to_string();
        assert!(msg.contains("Lua CPU time"), "{name}: {msg}");
        assert!(msg.contains("--cpu-limit"), "{name}: {msg}");
        assert!(
            location.as_deref().unwrap_or("").contains("score.lua:"),
            "{name}: where it was stopped: {msg}"
        );
        let next = c.perform(Request::prompt("y")).await.unwrap();
        assert_eq!(next.text, "fine", "{name}: the next request is served");
    }
}

#[tokio::test]
async fn a_runaway_loop_while_loading_fails_the_load() {
    let path = write_score(
        "runaway_load",
        &format!("while true do end\n{}", score_with("return 1")),
    );
    let err = Conductor::start(ScoreSource::file(&path), limited())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("loading the score used more than 200ms"),
        "{err}"
    );
}

#[tokio::test]
async fn time_spent_waiting_for_models_does_not_count() {
    let c = start_limited(
        "waiting",
        r#"orchestra.sleep(0.5)
        local text = band.coltrane:generate("x", { max_tokens = 400, ignore_eos = true })
        return #text"#,
    )
    .await;
    let a = c.perform(Request::prompt("x")).await.unwrap();
    assert!(a.elapsed_ms > 500.0, "{a:?}");
    assert!(a.lua_cpu_ms < 200.0, "{a:?}");
}

fn small_memory() -> ScoreOptions {
    options().with_memory_limit(64 << 20)
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_and_the_next_request_is_served() {
    let path = write_score(
        "memory_bomb",
        &score_with(&runaway_score(
            "local t = {}\nwhile true do t[#t + 1] = string.rep(\"x\", 1 << 20) .. #t end",
        )),
    );
    let c = Conductor::start(ScoreSource::file(&path), small_memory())
        .await
        .unwrap();
    let err = c.perform(Request::prompt("x")).await.unwrap_err();
    assert!(matches!(err, ScoreError::Memory { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("ran out of Lua memory (limit 64.0 MiB)"),
        "{err}"
    );
    assert_eq!(c.perform(Request::prompt("y")).await.unwrap().text, "fine");
    assert_eq!(c.version(), 1, "garbage was enough; no restart needed");
}

#[tokio::test]
async fn a_score_that_hoards_memory_in_globals_is_restarted() {
    let path = write_score(
        "memory_hoard",
        &score_with(&runaway_score(
            "hoard = hoard or {}\nwhile true do hoard[#hoard + 1] = string.rep(\"x\", 1 << 20) .. #hoard end",
        )),
    );
    let c = Conductor::start(ScoreSource::file(&path), small_memory())
        .await
        .unwrap();
    let err = c.perform(Request::prompt("x")).await.unwrap_err();
    assert!(matches!(err, ScoreError::Memory { .. }), "{err}");
    assert_eq!(c.perform(Request::prompt("y")).await.unwrap().text, "fine");
    assert_eq!(c.version(), 2, "the VM was rebuilt from the score");
}

#[tokio::test]
async fn a_wall_clock_timeout_ends_a_request_that_waits_too_long() {
    let path = write_score("timeout", &score_with("orchestra.sleep(5)\nreturn 1"));
    let c = Conductor::start(
        ScoreSource::file(&path),
        options().with_request_timeout(Some(Duration::from_millis(100))),
    )
    .await
    .unwrap();
    let err = c.perform(Request::prompt("x")).await.unwrap_err();
    assert!(matches!(err, ScoreError::Timeout { .. }), "{err}");
}
