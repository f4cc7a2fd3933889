//! Prefix snapshots: the KV state of a long prompt prefix, saved after its prefill and
//! loaded into a slot when a new session, a reloaded model or a restarted process sends
//! the same prefix — with the same greedy answer as a cold prefill, only the suffix
//! computed, never under another model file or context layout, never from a damaged
//! file, and never past the folder's size limit. Real llama.cpp inference on a
//! random-weights model (attention matters, so a wrong snapshot shows in the answer).

mod common;

use std::path::{Path, PathBuf};

use common::real::{Real, real_model};
use common::{scratch, tiny_random};
use orchestra::engine::{
    ChatMessage, Completion, GenerateRequest, LoadOptions, Model, SamplingParams, SnapshotOptions,
    list_snapshots,
};
use orchestra::synth::TensorType;

/// A system prompt long enough to be snapshotted (the agent's preamble).
const PREAMBLE: &str = "You are the band's arranger. The band plays swing, bebop, modal jazz and the blues; \
every answer names the key, the tempo and who solos first, then lists the changes bar by bar.";

/// The folder of one test's snapshots, empty at the start.
fn folder(test: &str) -> PathBuf {
    let dir = scratch().join(format!("snapshots-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn options(dir: &Path, context: u32) -> LoadOptions {
    LoadOptions {
        context,
        slots: 1,
        snapshots: SnapshotOptions {
            min_tokens: 32,
            dir: Some(dir.to_path_buf()),
            ram_bytes: 64 << 20,
            disk_bytes: 256 << 20,
        },
        ..LoadOptions::default()
    }
}

fn load(path: &Path, options: &LoadOptions) -> Model {
    Model::load(path, options).unwrap()
}

/// A model that never snapshots: the cold reference.
fn cold(path: &Path, context: u32) -> Model {
    let opts = LoadOptions {
        context,
        slots: 1,
        snapshots: SnapshotOptions::off(),
        ..LoadOptions::default()
    };
    load(path, &opts)
}

fn session(question: &str) -> GenerateRequest {
    GenerateRequest::chat(vec![
        ChatMessage::system(PREAMBLE),
        ChatMessage::user(question),
    ])
    .with_sampling(SamplingParams::greedy())
    .with_max_tokens(12)
}

fn run(model: &Model, request: GenerateRequest) -> Completion {
    model
        .generate(request)
        .unwrap()
        .blocking_finish_with(|_| {})
        .unwrap()
}

/// Tokens the session asking `question` shares with its preamble as the chat template
/// renders it (the snapshot point).
fn preamble_tokens(model: &Model, question: &str) -> usize {
    let full = model
        .render_chat(&[ChatMessage::system(PREAMBLE), ChatMessage::user(question)])
        .unwrap();
    // The system turn ends at its first end marker.
    let end = full.find("<|im_end|>").unwrap() + "<|im_end|>\n".len();
    let head = model.tokenize(&full[..end], true);
    let all = model.tokenize(&full, true);
    head.iter().zip(&all).take_while(|(a, b)| a == b).count()
}

/// Another conversation takes the model's only slot: its cache cannot help the next
/// session, so only a snapshot can.
fn take_the_only_slot(model: &Model) {
    run(
        model,
        GenerateRequest::raw("zebra quartet counting down: 9 8 7 6 5 4 3 2 1 0")
            .with_sampling(SamplingParams::greedy())
            .with_max_tokens(4),
    );
}

fn files(dir: &Path) -> Vec<PathBuf> {
    list_snapshots(dir).into_iter().map(|f| f.path).collect()
}

#[test]
fn a_new_session_reuses_the_preamble_from_ram_and_answers_as_a_cold_prefill() {
    let path = tiny_random(TensorType::F32);
    let dir = folder("ram");
    let model = load(&path, &options(&dir, 512));
    let first = run(&model, session("a ballad in D flat?"));
    assert_eq!(first.prompt_sources.computed, first.prompt_tokens);
    take_the_only_slot(&model);
    let second = run(&model, session("an up-tempo blues in F?"));
    let preamble = preamble_tokens(&model, "an up-tempo blues in F?");
    let s = second.prompt_sources;
    assert_eq!(s.ram, preamble, "{s:?}");
    assert_eq!((s.slot, s.disk), (0, 0), "{s:?}");
    assert_eq!(s.computed, second.prompt_tokens - preamble);
    assert_eq!(second.cached_tokens, preamble);
    let reference = run(&cold(&path, 512), session("an up-tempo blues in F?"));
    assert_eq!(reference.prompt_sources.computed, reference.prompt_tokens);
    assert_eq!(second.text, reference.text);
}

#[test]
fn after_a_restart_the_prefix_comes_from_disk_with_the_same_answer() {
    let path = tiny_random(TensorType::F32);
    let dir = folder("restart");
    let opts = options(&dir, 512);
    {
        let model = load(&path, &opts);
        run(&model, session("a ballad in D flat?"));
        model.flush_snapshots();
    }
    assert_eq!(files(&dir).len(), 1, "one snapshot written");
    // A fresh model on the same file: nothing in its slots or RAM.
    let model = load(&path, &opts);
    let warm = run(&model, session("an up-tempo blues in F?"));
    let preamble = preamble_tokens(&model, "an up-tempo blues in F?");
    assert_eq!(
        warm.prompt_sources.disk, preamble,
        "{:?}",
        warm.prompt_sources
    );
    assert_eq!(warm.prompt_sources.computed, warm.prompt_tokens - preamble);
    let reference = run(&cold(&path, 512), session("an up-tempo blues in F?"));
    assert_eq!(warm.text, reference.text);
    // It spared enough: no second snapshot of the same preamble.
    model.flush_snapshots();
    assert_eq!(files(&dir).len(), 1);
}

#[test]
fn a_snapshot_of_other_context_settings_or_another_model_file_is_not_used() {
    let path = tiny_random(TensorType::F32);
    let dir = folder("mismatch");
    {
        let model = load(&path, &options(&dir, 512));
        run(&model, session("a ballad in D flat?"));
        model.flush_snapshots();
    }
    assert_eq!(files(&dir).len(), 1);
    let other_context = load(&path, &options(&dir, 384));
    let other_model = load(&tiny_random(TensorType::F16), &options(&dir, 512));
    for (what, model) in [
        ("another context size", &other_context),
        ("another model file", &other_model),
    ] {
        let c = run(model, session("an up-tempo blues in F?"));
        assert_eq!(
            c.prompt_sources.computed, c.prompt_tokens,
            "{what}: {:?}",
            c.prompt_sources
        );
        model.flush_snapshots();
    }
    // Each wrote its own snapshot next to the first.
    assert_eq!(files(&dir).len(), 3);
}

#[test]
fn a_damaged_snapshot_file_is_rejected_deleted_and_recomputed() {
    let path = tiny_random(TensorType::F32);
    let reference = run(&cold(&path, 512), session("an up-tempo blues in F?")).text;
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 3] = [
        ("a flipped payload byte", |b| {
            let i = b.len() - 100;
            b[i] ^= 0x40;
        }),
        ("truncated", |b| b.truncate(b.len() / 2)),
        ("a flipped token", |b| {
            // The tokens follow the 122-byte header and the label; flip the first.
            let label = u16::from_le_bytes([b[120], b[121]]) as usize;
            b[122 + label] ^= 1;
        }),
    ];
    for (what, damage) in damages {
        let dir = folder(&format!("damaged-{}", what.replace(' ', "-")));
        let opts = options(&dir, 512);
        {
            let model = load(&path, &opts);
            run(&model, session("a ballad in D flat?"));
            model.flush_snapshots();
        }
        let file = files(&dir).pop().expect("a snapshot file");
        let mut bytes = std::fs::read(&file).unwrap();
        damage(&mut bytes);
        std::fs::write(&file, &bytes).unwrap();

        let model = load(&path, &opts);
        let c = run(&model, session("an up-tempo blues in F?"));
        assert_eq!(
            c.prompt_sources.computed, c.prompt_tokens,
            "{what}: loaded {:?}",
            c.prompt_sources
        );
        assert_eq!(c.text, reference, "{what}");
        model.flush_snapshots();
        // The damaged file is gone; the recomputed prefix was snapshotted again.
        let again = files(&dir);
        assert_eq!(again.len(), 1, "{what}");
        drop(model);
        let model = load(&path, &opts);
        let c = run(&model, session("a third question?"));
        assert!(c.prompt_sources.disk > 0, "{what}: {:?}", c.prompt_sources);
    }
}

#[test]
fn the_snapshot_folder_stays_within_its_size_limit_dropping_the_least_recent() {
    let path = tiny_random(TensorType::F32);
    let dir = folder("limit");
    let mut opts = options(&dir, 512);
    let preamble = |k: usize| format!("Session {k}: {PREAMBLE}");
    let ask = |model: &Model, k: usize| {
        let req = GenerateRequest::chat(vec![
            ChatMessage::system(preamble(k)),
            ChatMessage::user("what next?"),
        ])
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(2);
        let c = run(model, req);
        model.flush_snapshots();
        c
    };
    let one = {
        let model = load(&path, &opts);
        ask(&model, 0);
        list_snapshots(&dir)[0].bytes
    };
    // Room for two and a half snapshots.
    opts.snapshots.disk_bytes = one * 5 / 2;
    let model = load(&path, &opts);
    for k in 1..=4 {
        ask(&model, k);
        let total: u64 = list_snapshots(&dir).iter().map(|f| f.bytes).sum();
        assert!(
            total <= opts.snapshots.disk_bytes,
            "{total} bytes after session {k}"
        );
    }
    assert_eq!(files(&dir).len(), 2);
    // The two most recent sessions survived: a restart finds them on disk.
    drop(model);
    let model = load(&path, &opts);
    assert!(ask(&model, 4).prompt_sources.disk > 0);
    assert!(ask(&model, 3).prompt_sources.disk > 0);
}

/// An agent-sized preamble on the real Qwen model: a restart loads it from disk and
/// computes only the question.
#[test]
#[ignore = "needs the real test models: scripts/fetch-test-models"]
fn qwen_reuses_a_long_preamble_after_a_restart() {
    let path = real_model(Real::Qwen);
    let dir = folder("qwen");
    let opts = LoadOptions {
        context: 4096,
        slots: 1,
        snapshots: SnapshotOptions {
            min_tokens: 512,
            dir: Some(dir.clone()),
            ..SnapshotOptions::default()
        },
        ..LoadOptions::default()
    };
    let tools: String = (0..24)
        .map(|i| format!("- tool_{i}(path: string, pattern: string): searches file {i} of the workspace for the pattern and returns matching lines with their numbers.\n"))
        .collect();
    let system = format!("{PREAMBLE}\nYou can call these tools:\n{tools}");
    let ask = |model: &Model, q: &str| {
        let req = GenerateRequest::chat(vec![ChatMessage::system(&system), ChatMessage::user(q)])
            .with_sampling(SamplingParams::greedy())
            .with_max_tokens(8);
        run(model, req)
    };
    let first = {
        let model = load(&path, &opts);
        let c = ask(&model, "Which tool finds TODO comments?");
        model.flush_snapshots();
        c
    };
    assert!(first.prompt_tokens > 800, "{}", first.prompt_tokens);
    let model = load(&path, &opts);
    let warm = ask(&model, "Which tool lists the files?");
    let s = warm.prompt_sources;
    assert!(s.disk > 800 && s.computed < 40, "{s:?}");
    assert!(
        warm.timings.ttft_ms < first.timings.ttft_ms / 4.0,
        "warm {} ms vs cold {} ms",
        warm.timings.ttft_ms,
        first.timings.ttft_ms
    );
    let reference = {
        let opts = LoadOptions {
            snapshots: SnapshotOptions::off(),
            ..opts.clone()
        };
        ask(&load(&path, &opts), "Which tool lists the files?")
    };
    assert_eq!(warm.text, reference.text);
}

/// A score sets the prompt cache per instrument: `prompt_cache = { ... }` turns the
/// RAM tier on with its own threshold, `prompt_cache = false` turns snapshots off, and
/// a wrong value is a clear error at load.
#[tokio::test]
async fn a_score_sets_the_prompt_cache_per_instrument() {
    use orchestra::score::{Conductor, Request, ScoreOptions, ScoreSource};

    let path = tiny_random(TensorType::F32);
    let dir = scratch().join("snapshots-score");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let score = |cache: &str| {
        format!(
            r#"local band = orchestra.band {{ memory = "1GiB" }}
band:add("keeper", {{ model = {model:?}, section = "code", context = 512, slots = 1,
  sampling = {{ temperature = 0 }}, prompt_cache = {cache} }})
local preamble = {PREAMBLE:?}
local function ask(q)
  local _, d = band.keeper:chat({{ {{ role = "system", content = preamble }}, {{ role = "user", content = q }} }}, {{ max_tokens = 4 }})
  return d.prompt_sources
end
return {{ perform = function(req)
  local first = ask("a ballad in D flat?")
  band.keeper:generate("zebra quartet counting down: 9 8 7 6 5 4 3 2 1 0", {{ max_tokens = 4 }})
  local second = ask("an up-tempo blues in F?")
  return {{ first = first, second = second }}
end }}
"#,
            model = path.display().to_string(),
        )
    };
    let play = |text: String, name: &str| {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        async move {
            let c = Conductor::start(ScoreSource::file(&file), ScoreOptions::default()).await?;
            c.perform(Request::prompt("play")).await
        }
    };

    let on = play(
        score(r#"{ min_tokens = 16, ram = "16MiB", disk = 0 }"#),
        "on.lua",
    )
    .await
    .unwrap()
    .data;
    assert_eq!(on["first"]["ram"], 0, "{on}");
    assert!(on["second"]["ram"].as_u64().unwrap() > 16, "{on}");
    assert_eq!(on["second"]["disk"], 0, "disk = 0 writes no files: {on}");

    let off = play(score("false"), "off.lua").await.unwrap().data;
    assert_eq!(off["second"]["ram"], 0, "{off}");
    assert_eq!(off["second"]["disk"], 0, "{off}");
    assert!(off["second"]["computed"].as_u64().unwrap() > 16, "{off}");

    let err = play(score(r#"{ ram = "lots" }"#), "bad.lua")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("prompt_cache.ram") && err.contains("512MiB"),
        "{err}"
    );
}

/// An agent's turn is `[system, user (stamped per session), user]` (OpenClaw puts the
/// time and the session id in its first user message): the snapshot is taken at the
/// end of the system preamble, so the next session — whose first user message differs —
/// still reuses it.
#[test]
fn a_session_stamped_first_message_still_reuses_the_system_preamble() {
    let path = tiny_random(TensorType::F32);
    let dir = folder("stamped");
    let model = load(&path, &options(&dir, 512));
    let turn = |session: &str| {
        GenerateRequest::chat(vec![
            ChatMessage::system(PREAMBLE),
            ChatMessage::user(format!("[session {session}] a ballad in D flat?")),
            ChatMessage::user("context: the drummer is late"),
        ])
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(8)
    };
    let first = run(&model, turn("alpha-1"));
    assert_eq!(first.prompt_sources.computed, first.prompt_tokens);
    take_the_only_slot(&model);
    let second = run(&model, turn("bravo-2"));
    let preamble = preamble_tokens(&model, "[session bravo-2] a ballad in D flat?");
    let s = second.prompt_sources;
    assert_eq!(s.ram, preamble, "{s:?}");
    assert_eq!(s.computed, second.prompt_tokens - preamble, "{s:?}");
    let reference = run(&cold(&path, 512), turn("bravo-2"));
    assert_eq!(second.text, reference.text);
}
