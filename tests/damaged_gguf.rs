//! A damaged model file never takes the orchestra down. Thousands of copies of a small
//! valid GGUF, each damaged the way disks, interrupted copies and bad converters damage
//! files (flipped bits, random byte runs, changed count and length fields, cuts,
//! repeated token strings), are loaded through the engine in this test process: each
//! is a clean error or a model that generates — the process surviving is the point.
//! Then the cases one by one: duplicate token strings (the abort that started this),
//! a probe process that crashes, and a served band whose one damaged instrument gets a
//! 5xx with the reason while the others keep playing.

mod gguf_damage;
mod serve_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use gguf_damage::{duplicate_token, flip_bits, mutate, random_run};
use orchestra::engine::{EngineError, GenerateRequest, LoadOptions, Model, SamplingParams};
use orchestra::events::EventKind;
use orchestra::gguf::{GgufError, GgufHeader, MetaValue};
use orchestra::server::ServeConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use serve_support::*;

/// Damaged copies loaded by the property test, times `ORCHESTRA_FUZZ_SCALE`.
fn cases(base: usize) -> usize {
    let scale: usize = std::env::var("ORCHESTRA_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    base * scale.max(1)
}

/// A fresh folder for one test.
fn test_dir(test: &str) -> PathBuf {
    let dir = scratch().join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Small and quick: the damaged copies are loaded thousands of times.
fn load_options() -> LoadOptions {
    LoadOptions {
        context: 64,
        slots: 1,
        batch: 64,
        threads: Some(1),
        ..LoadOptions::default()
    }
}

/// Loads `path` and, when it loads, generates a few tokens. `Ok(())`: a working model;
/// `Err`: the load failed with an error that names the file.
fn load_and_play(path: &Path) -> Result<(), EngineError> {
    let model = Model::load(path, &load_options())?;
    let request = GenerateRequest::raw("hello, café 東京")
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(3)
        .with_ignore_eos(true);
    let done = model
        .generate(request)
        .and_then(|g| g.blocking_finish_with(|_| {}));
    let completion =
        done.unwrap_or_else(|e| panic!("`{}` loaded but does not generate: {e}", path.display()));
    assert_eq!(completion.completion_tokens, 3, "a working model generates");
    Ok(())
}

/// Where in a header the counts and lengths are: the tensor and key counts, each
/// key's string length or array count, each tensor's dims count, dims, type and offset.
/// (offset, width in bytes)
fn count_fields(bytes: &[u8], h: &GgufHeader) -> Vec<(usize, usize)> {
    let mut fields = vec![(8, 8), (16, 8)];
    let find = |name: &str| {
        let mut needle = (name.len() as u64).to_le_bytes().to_vec();
        needle.extend_from_slice(name.as_bytes());
        bytes[..h.data_offset as usize]
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .map(|at| at + needle.len())
    };
    for (key, value) in &h.metadata {
        let Some(after) = find(key) else { continue };
        match value {
            // element type, then the count
            MetaValue::Array(_) => fields.extend([(after + 4, 4), (after + 8, 8)]),
            MetaValue::Str(_) => fields.push((after + 4, 8)),
            _ => fields.push((after + 4, 4)),
        }
    }
    for t in &h.tensors {
        let Some(after) = find(&t.name) else { continue };
        fields.push((after, 4));
        for d in 0..t.dims.len() {
            fields.push((after + 4 + 8 * d, 8));
        }
        let ty = after + 4 + 8 * t.dims.len();
        fields.extend([(ty, 4), (ty + 4, 8)]);
    }
    fields
}

/// What one damaged copy looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Damage {
    HeaderBits,
    AnyBits,
    ByteRun,
    CountField,
    Truncation,
    DuplicateToken,
    Mixed,
}

const DAMAGES: &[Damage] = &[
    Damage::HeaderBits,
    Damage::AnyBits,
    Damage::ByteRun,
    Damage::CountField,
    Damage::Truncation,
    Damage::DuplicateToken,
    Damage::Mixed,
];

struct Original {
    bytes: Vec<u8>,
    header_len: usize,
    fields: Vec<(usize, usize)>,
    /// Token strings grouped by length: pairs to make equal.
    tokens_by_len: Vec<Vec<String>>,
}

impl Original {
    fn of(path: &Path) -> Original {
        let h = orchestra::gguf::read_header(path).unwrap();
        let bytes = std::fs::read(path).unwrap();
        let fields = count_fields(&bytes, &h);
        let mut tokens_by_len: Vec<Vec<String>> = Vec::new();
        for t in h.tokens().unwrap() {
            if t.is_empty() {
                continue;
            }
            if tokens_by_len.len() <= t.len() {
                tokens_by_len.resize(t.len() + 1, Vec::new());
            }
            tokens_by_len[t.len()].push(t.clone());
        }
        tokens_by_len.retain(|g| g.len() > 1);
        Original {
            bytes,
            header_len: h.data_offset as usize,
            fields,
            tokens_by_len,
        }
    }

    fn damaged(&self, r: &mut ChaCha8Rng, damage: Damage) -> Vec<u8> {
        let mut b = self.bytes.clone();
        let header = self.header_len;
        match damage {
            Damage::HeaderBits => {
                let n = r.random_range(1..=4);
                flip_bits(r, &mut b[..header], n);
            }
            Damage::AnyBits => {
                let n = r.random_range(1..=8);
                flip_bits(r, &mut b, n);
            }
            Damage::ByteRun => random_run(r, &mut b[..header]),
            Damage::CountField => {
                let (at, width) = self.fields[r.random_range(0..self.fields.len())];
                let old = if width == 4 {
                    u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()))
                } else {
                    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
                };
                let new = match r.random_range(0..7) {
                    0 => old.wrapping_add(1),
                    1 => old.wrapping_sub(1),
                    2 => old.wrapping_mul(2),
                    3 => 0,
                    4 => u64::from(u32::MAX),
                    5 => u64::MAX,
                    _ => old ^ (1 << r.random_range(0..width * 8)),
                };
                b[at..at + width].copy_from_slice(&new.to_le_bytes()[..width]);
            }
            Damage::Truncation => b.truncate(r.random_range(0..b.len())),
            Damage::DuplicateToken => {
                let group = &self.tokens_by_len[r.random_range(0..self.tokens_by_len.len())];
                let from = &group[r.random_range(0..group.len())];
                let to = &group[r.random_range(0..group.len())];
                b = duplicate_token(&b, from, to);
            }
            Damage::Mixed => {
                let mut h = mutate(r, &b[..header]);
                h.extend_from_slice(&b[header..]);
                b = h;
            }
        }
        b
    }
}

/// How the engine took one damaged copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Outcome {
    /// Loaded and generated.
    Played,
    /// Refused by the header reader (truncated, not GGUF, malformed).
    Reader,
    /// Refused by validation before llama.cpp saw it.
    Validation,
    /// llama.cpp returned an error.
    LlamaError,
    /// The probe process crashed on it (validation missed something).
    ProbeCrash,
}

fn outcome(path: &Path, result: Result<(), EngineError>) -> Outcome {
    let e = match result {
        Ok(()) => return Outcome::Played,
        Err(e) => e,
    };
    let message = e.to_string();
    let stem = path.file_stem().unwrap().to_string_lossy();
    assert!(
        message.contains(&*stem) && message.len() > 40,
        "the error names the file and says why: {message}"
    );
    match e {
        EngineError::Damaged { reason, .. } if reason.contains("probe process") => {
            println!("  validation missed, the probe caught: {reason}");
            Outcome::ProbeCrash
        }
        EngineError::Damaged { .. } => Outcome::Validation,
        EngineError::BadModel { .. } | EngineError::MissingFile(_) => Outcome::Reader,
        EngineError::LoadFailed(_) | EngineError::ContextFailed { .. } => Outcome::LlamaError,
        other => panic!("an unexpected error for a damaged file: {other}"),
    }
}

#[test]
fn thousands_of_damaged_copies_load_cleanly_or_play_and_never_abort_the_process() {
    let dir = test_dir("property");
    let original = Original::of(&drone());
    let total = cases(5000);
    let workers = 2;
    let started = Instant::now();
    let tallies: Vec<Vec<(Damage, Outcome)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (dir, original) = (&dir, &original);
                s.spawn(move || {
                    let mut r = ChaCha8Rng::seed_from_u64(0x6467_6775_6600 + w as u64);
                    let path = dir.join(format!("damaged-{w}.gguf"));
                    (w..total)
                        .step_by(workers)
                        .map(|i| {
                            let damage = DAMAGES[i % DAMAGES.len()];
                            std::fs::write(&path, original.damaged(&mut r, damage)).unwrap();
                            (damage, outcome(&path, load_and_play(&path)))
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<(Damage, Outcome)> = tallies.into_iter().flatten().collect();
    assert_eq!(all.len(), total);
    let mut table = std::collections::BTreeMap::<(Damage, Outcome), usize>::new();
    for &pair in &all {
        *table.entry(pair).or_default() += 1;
    }
    let count = |o: Outcome| all.iter().filter(|(_, x)| *x == o).count();
    println!(
        "{total} damaged copies in {:.1?}: {} played, {} refused by the reader, {} by validation, {} by llama.cpp, {} crashed the probe process",
        started.elapsed(),
        count(Outcome::Played),
        count(Outcome::Reader),
        count(Outcome::Validation),
        count(Outcome::LlamaError),
        count(Outcome::ProbeCrash),
    );
    for ((damage, outcome), n) in &table {
        println!("  {damage:?} -> {outcome:?}: {n}");
    }
    // Every duplicate token made of two different strings is validation's catch.
    assert!(count(Outcome::Validation) > 0 && count(Outcome::Played) > 0);
    assert_eq!(
        count(Outcome::ProbeCrash),
        0,
        "validation knows every crash this corpus finds"
    );
}

/// The drone's file with the token `<0x42>` renamed `<0x41>`.
fn duplicate_token_file(dir: &Path) -> PathBuf {
    let path = dir.join("duplicate-token.gguf");
    let bytes = std::fs::read(drone()).unwrap();
    std::fs::write(&path, duplicate_token(&bytes, "<0x42>", "<0x41>")).unwrap();
    path
}

#[test]
fn duplicate_token_strings_are_refused_before_llama_cpp_sees_them() {
    let dir = test_dir("duplicate");
    let path = duplicate_token_file(&dir);
    let header = orchestra::gguf::read_header(&path).unwrap();
    let ids: Vec<usize> = ["<0x41>", "<0x42>"]
        .iter()
        .map(|t| {
            orchestra::gguf::read_header(drone())
                .unwrap()
                .tokens()
                .unwrap()
                .iter()
                .position(|x| x == t)
                .unwrap()
        })
        .collect();
    let err = orchestra::gguf::validate(&header).unwrap_err();
    assert!(matches!(err, GgufError::Damaged { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "`{}` is damaged: tokens {} and {} are both `<0x41>`; token strings must be unique; download it again or re-convert it",
            path.display(),
            ids[0],
            ids[1]
        )
    );
    let err = Model::load(&path, &load_options()).unwrap_err();
    assert!(
        matches!(&err, EngineError::Damaged { reason, .. } if reason.contains("are both `<0x41>`")),
        "{err}"
    );

    // The abort this prevents is real: llama.cpp given the file unchecked ends its
    // process (here the probe command with validation off, in a child).
    let out = Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(["__probe-model", "--unvalidated"])
        .arg(&path)
        .env("ORCHESTRA_PROBE", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{stderr}");
    assert!(
        stderr.contains("GGML_ASSERT(id_to_token.size() == token_to_id.size()) failed"),
        "{stderr}"
    );
}

/// `orchestra generate` on `model` with `env`; (success, stderr).
fn generate(model: &Path, home: &Path, env: &[(&str, &Path)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestra"));
    cmd.args(["generate", "--max-tokens", "2", "--model"])
        .arg(model)
        .arg("hello")
        .env("ORCHESTRA_HOME", home)
        .env_remove("ORCHESTRA_PROBE_BIN")
        .env_remove("ORCHESTRA_PROBE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_crash_in_the_probe_process_is_a_clear_error_and_a_file_that_loads_is_remembered() {
    let dir = test_dir("probe_crash");
    let home = dir.join("home");
    let model = dir.join("new-model.gguf");
    std::fs::copy(drone(), &model).unwrap();
    // A probe that dies the way llama.cpp dies on an assertion.
    let fake = dir.join("crashing-probe");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'llama-vocab.cpp:2578: GGML_ASSERT(something) failed' >&2\nkill -ABRT $$\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();

    let (ok, stderr) = generate(&model, &home, &[("ORCHESTRA_PROBE_BIN", &fake)]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "`{}` is damaged: loading it crashed a probe process (SIGABRT): llama-vocab.cpp:2578: GGML_ASSERT(something) failed; download it again or re-convert it",
            model.display()
        )),
        "{stderr}"
    );
    let cache = home.join("probed-models.json");
    assert!(!cache.exists(), "a crash is not remembered as good");

    // The real probe (this orchestra binary) loads the file: remembered, so the next
    // load skips the probe — even with a probe binary that would crash.
    let (ok, stderr) = generate(&model, &home, &[]);
    assert!(ok, "{stderr}");
    let remembered: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    let entry = &remembered[0];
    assert_eq!(
        entry["path"].as_str().unwrap(),
        model.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(entry["size"], std::fs::metadata(&model).unwrap().len());
    let (ok, stderr) = generate(&model, &home, &[("ORCHESTRA_PROBE_BIN", &fake)]);
    assert!(ok, "a known-good file loads in-process: {stderr}");

    // A changed file is a new file: probed again.
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes).unwrap();
    let (ok, stderr) = generate(&model, &home, &[("ORCHESTRA_PROBE_BIN", &fake)]);
    assert!(!ok && stderr.contains("probe process"), "{stderr}");
}

fn lua_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

fn chat(model: &str, prompt: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": prompt }] })
}

async fn ask(s: &Served, body: &Value) -> (u16, Value) {
    let res = client()
        .post(format!("{}/chat/completions", s.url))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

fn content(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

#[test]
fn a_damaged_instrument_gets_a_5xx_with_the_reason_while_the_band_plays_on() {
    runtime().block_on(async {
        let dir = test_dir("serve");
        let victim = duplicate_token_file(&dir);
        let score = dir.join("score.lua");
        std::fs::write(
            &score,
            format!(
                r#"local route = require("orchestra.route")
local arrange = require("orchestra.arrange")
local band = orchestra.band {{ memory = "2GiB", sections = {{ "code", "creative" }} }}
band:add("victim", {{ model = {victim}, section = "code", context = 512, slots = 2, sampling = {{ temperature = 0 }} }})
band:add("coltrane", {{ model = orchestra.rehearsal_model("coltrane"), section = "code", context = 512, slots = 2, sampling = {{ temperature = 0 }} }})
band:add("ella", {{ model = orchestra.rehearsal_model("ella"), section = "creative", context = 512, slots = 2, sampling = {{ temperature = 0 }} }})
local router = route.rules({{ {{ otherwise = "code" }} }}, {{ band = band }})
return {{
  perform = function(req)
    if req.prompt == "ask the victim from Lua" then
      local text, err = band.victim:generate("hello")
      return tostring(text) .. " | " .. tostring(err)
    end
    return arrange.perform(band, req, {{ router = router, comp = false, review = false }})
  end,
}}
"#,
                victim = lua_path(&victim),
            ),
        )
        .unwrap();
        let s = serve_file(&score, ServeConfig::default()).await;
        let mut events = s.conductor.events().subscribe();

        // The damaged instrument and two healthy ones, asked at once.
        let (to_victim, to_coltrane, to_ella) = (
            chat("victim", "hello"),
            chat("coltrane", "hello"),
            chat("ella", "hello"),
        );
        let (victim_answer, coltrane, ella) = tokio::join!(
            ask(&s, &to_victim),
            ask(&s, &to_coltrane),
            ask(&s, &to_ella),
        );
        let (status, body) = victim_answer;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!((500..600).contains(&status), "{body}");
        assert!(
            message.contains("`victim`")
                && message.contains("is damaged")
                && message.contains("are both `<0x41>`"),
            "the error names the instrument and the reason: {message}"
        );
        assert_eq!((coltrane.0, content(&coltrane.1)), (200, script("coltrane")));
        assert_eq!((ella.0, content(&ella.1)), (200, script("ella")));

        // The arrangement: the next of the section steps in, and the trace says why.
        let (status, body) = ask(&s, &chat("orchestra/code", "write a loop")).await;
        assert_eq!(status, 200, "{body}");
        let o = &body["orchestra"];
        assert_eq!(o["soloist"], "coltrane", "{o:#}");
        assert_eq!(content(&body), script("coltrane"));
        let fallback = &o["trace"]["fallbacks"][0];
        assert_eq!(fallback["from"], "victim", "{o:#}");
        assert!(
            fallback["error"]
                .as_str()
                .is_some_and(|e| e.contains("is damaged")),
            "{fallback}"
        );

        // Lua gets `nil, err`.
        let (status, body) = ask(&s, &chat("orchestra", "ask the victim from Lua")).await;
        assert_eq!(status, 200, "{body}");
        let said = content(&body);
        assert!(
            said.starts_with("nil | ") && said.contains("are both `<0x41>`"),
            "{said}"
        );

        // An event and a metric.
        let mut announced = false;
        while let Ok(e) = events.try_recv() {
            if let EventKind::ModelLoadFailed { model, .. } = &e.kind {
                announced |= model == "victim";
            }
        }
        assert!(announced, "the failed load was announced");
        let metrics = client()
            .get(format!("http://{}/metrics", s.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let failures: u64 = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(r#"orchestra_model_load_failures_total{instrument="victim"} "#)
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("the failures are counted: {metrics}"));
        assert!(failures >= 3, "{failures}");

        // And the band still plays.
        let (status, body) = ask(&s, &chat("ella", "again")).await;
        assert_eq!((status, content(&body)), (200, script("ella")));
        assert_eq!(s.state.admission.in_flight(), 0);
    });
}

#[test]
#[ignore = "needs the real test models: scripts/fetch-test-models"]
fn real_models_pass_validation_and_a_damaged_copy_of_qwen_is_refused() {
    use real::{Real, real_model};
    for (which, embeddings) in [
        (Real::Qwen, false),
        (Real::Gemma, false),
        (Real::MiniLm, true),
    ] {
        let path = real_model(which);
        let started = Instant::now();
        orchestra::gguf::read_validated(&path)
            .unwrap_or_else(|e| panic!("a real model must pass validation: {e}"));
        let validated = started.elapsed();
        let options = LoadOptions {
            context: 256,
            slots: 1,
            embeddings,
            ..LoadOptions::default()
        };
        let started = Instant::now();
        let model = Model::load(&path, &options).unwrap();
        println!(
            "{}: validated in {validated:.1?}, loaded (probe included the first time) in {:.1?}",
            which.file_name(),
            started.elapsed()
        );
        drop(model);
    }

    // Qwen with two of its 151k token strings made equal: a copy of the header with
    // the tensor data left as a hole of the original length.
    let qwen = real_model(Real::Qwen);
    let h = orchestra::gguf::read_header(&qwen).unwrap();
    let tokens = h.tokens().unwrap();
    let plain = |t: &&String| t.len() > 3 && t.chars().all(char::is_alphanumeric);
    let (at, from) = tokens
        .iter()
        .enumerate()
        .skip(1000)
        .find(|(_, t)| plain(t))
        .unwrap();
    let to = tokens
        .iter()
        .skip(at + 1)
        .find(|t| plain(t) && t.len() == from.len())
        .unwrap();
    let mut header = vec![0u8; h.data_offset as usize];
    use std::io::Read as _;
    std::fs::File::open(&qwen)
        .unwrap()
        .read_exact(&mut header)
        .unwrap();
    let dir = test_dir("real_duplicate");
    let damaged = dir.join("qwen-damaged.gguf");
    std::fs::write(&damaged, duplicate_token(&header, to, from)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&damaged)
        .unwrap()
        .set_len(h.file_size)
        .unwrap();
    let err = Model::load(&damaged, &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(&err, EngineError::Damaged { reason, .. } if reason.contains(&format!("are both `{from}`"))),
        "{err}"
    );
}
