//! The stage on real loads: eviction order under a budget, pinning, never evicting a
//! playing model, refusing a model that cannot fit, shared loads and idle unloads,
//! memory that always comes back (cancelled and failed loads, removed and replaced
//! models that were still playing), shared weights, and footprints as llama.cpp
//! allocated them.

mod common;

use std::time::Duration;

use common::real::{Real, real_model};
use common::{ALPHA, BETA, rehearsal, runtime, scratch};
use orchestra::engine::{GenerateRequest, KvCache, LoadOptions, Model, SamplingParams};
use orchestra::events::{EventBus, EventKind};
use orchestra::metrics::Metrics;
use orchestra::stage::{Lease, ModelSpec, Stage, StageConfig, StageError, estimate};
use orchestra::synth::TensorType;

const GAMMA: &str = "Gamma keeps the time on a brushed snare.";

fn options() -> LoadOptions {
    LoadOptions {
        context: 256,
        slots: 1,
        ..LoadOptions::default()
    }
}

/// A stage with three same-sized models and room for `fit` of them.
fn stage_for(fit: f64, ttl: Option<Duration>, wait: Duration) -> (Stage, u64) {
    let a = rehearsal("alpha", ALPHA, TensorType::Q8_0);
    let one = estimate(&a, &options()).unwrap().total();
    let stage = Stage::new(
        StageConfig {
            budget: (one as f64 * fit) as u64,
            idle_ttl: ttl,
            wait_for_room: wait,
        },
        EventBus::new(),
    );
    for (name, script) in [("alpha", ALPHA), ("beta", BETA), ("gamma", GAMMA)] {
        let path = rehearsal(name, script, TensorType::Q8_0);
        stage.add(ModelSpec::new(name, path).with_options(options()));
    }
    (stage, one)
}

async fn play(stage: &Stage, name: &str) -> String {
    let lease = stage.acquire(name).await.unwrap();
    let req = GenerateRequest::user("hi").with_sampling(SamplingParams::greedy());
    lease.generate(req).unwrap().finish().await.unwrap().text
}

#[test]
fn the_least_recently_used_idle_model_is_evicted_first() {
    runtime().block_on(async {
        // Each rehearsal model's estimate is about the same; room for two and a half.
        let (stage, _) = stage_for(2.5, None, Duration::from_secs(1));
        assert_eq!(play(&stage, "alpha").await, ALPHA);
        assert_eq!(play(&stage, "beta").await, BETA);
        // alpha is used again, so beta is now the least recently used.
        assert_eq!(play(&stage, "alpha").await, ALPHA);
        assert_eq!(play(&stage, "gamma").await, GAMMA);
        assert!(stage.is_resident("alpha"));
        assert!(!stage.is_resident("beta"));
        assert!(stage.is_resident("gamma"));
        assert!(stage.used() <= stage.budget());
    });
}

#[test]
fn a_pinned_model_is_not_evicted() {
    runtime().block_on(async {
        let (stage, _) = stage_for(2.5, None, Duration::from_secs(1));
        stage.pin("alpha", true).unwrap();
        play(&stage, "alpha").await;
        play(&stage, "beta").await;
        play(&stage, "gamma").await;
        // alpha was least recently used but pinned: beta went instead.
        assert!(stage.is_resident("alpha"));
        assert!(!stage.is_resident("beta"));
        assert!(stage.is_resident("gamma"));
    });
}

#[test]
fn a_playing_model_is_never_evicted_and_a_full_budget_says_who_holds_it() {
    runtime().block_on(async {
        let (stage, _) = stage_for(2.5, None, Duration::from_millis(300));
        let a = stage.acquire("alpha").await.unwrap();
        let b = stage.acquire("beta").await.unwrap();
        let err = match stage.acquire("gamma").await {
            Err(e) => e,
            Ok(_) => panic!("gamma must not fit while alpha and beta play"),
        };
        assert!(matches!(err, StageError::BudgetFull { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("`alpha`") && msg.contains("playing"), "{msg}");
        assert!(stage.is_resident("alpha") && stage.is_resident("beta"));
        assert!(matches!(stage.evict("alpha"), Err(StageError::Playing(_))));
        // When one stops playing, gamma gets in.
        drop(b);
        drop(a);
        assert_eq!(play(&stage, "gamma").await, GAMMA);
    });
}

#[test]
fn a_load_waits_for_a_playing_model_to_finish() {
    runtime().block_on(async {
        let (stage, _) = stage_for(1.5, None, Duration::from_secs(30));
        let a = stage.acquire("alpha").await.unwrap();
        let s2 = stage.clone();
        let waiter = tokio::spawn(async move { play(&s2, "beta").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiter.is_finished(), "beta must wait while alpha plays");
        drop(a);
        assert_eq!(waiter.await.unwrap(), BETA);
        assert!(!stage.is_resident("alpha"));
    });
}

#[test]
fn a_model_that_cannot_fit_alone_is_refused_with_the_numbers() {
    runtime().block_on(async {
        let (stage, _) = stage_for(0.5, None, Duration::from_secs(1));
        let err = match stage.acquire("alpha").await {
            Err(e) => e,
            Ok(_) => panic!("alpha cannot fit in half its size"),
        };
        let msg = err.to_string();
        assert!(matches!(err, StageError::TooLarge { .. }), "{msg}");
        assert!(msg.contains("weights") && msg.contains("KV cache") && msg.contains("budget"));
        assert!(msg.contains("raise the budget"), "{msg}");
        // The stage goes on: nothing is resident, nothing leaked.
        assert_eq!(stage.used(), 0);
    });
}

#[test]
fn two_requests_for_a_loading_model_share_one_load() {
    runtime().block_on(async {
        let (stage, _) = stage_for(3.5, None, Duration::from_secs(1));
        let mut events = stage.events().subscribe();
        let (x, y) = tokio::join!(play(&stage, "beta"), play(&stage, "beta"));
        assert_eq!((x.as_str(), y.as_str()), (BETA, BETA));
        let mut loads = 0;
        while let Ok(e) = events.try_recv() {
            if let EventKind::ModelLoaded { model, .. } = e.kind {
                assert_eq!(model, "beta");
                loads += 1;
            }
        }
        assert_eq!(loads, 1);
    });
}

#[test]
fn idle_models_unload_after_their_ttl_but_pinned_ones_stay() {
    runtime().block_on(async {
        let (stage, _) = stage_for(
            3.5,
            Some(Duration::from_millis(100)),
            Duration::from_secs(1),
        );
        stage.pin("beta", true).unwrap();
        play(&stage, "alpha").await;
        play(&stage, "beta").await;
        assert!(
            stage.unload_idle().is_empty(),
            "nothing is idle long enough yet"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(stage.unload_idle(), vec!["alpha".to_string()]);
        assert!(stage.is_resident("beta"));
    });
}

#[test]
fn the_real_footprint_replaces_the_estimate_after_a_load() {
    runtime().block_on(async {
        let (stage, one) = stage_for(3.5, None, Duration::from_secs(1));
        play(&stage, "alpha").await;
        let r = &stage.resident()[0];
        // The same formulas with llama.cpp's real numbers: close to the estimate.
        let ratio = r.footprint_bytes as f64 / one as f64;
        assert!(
            (0.8..1.25).contains(&ratio),
            "estimate {one}, real {}",
            r.footprint_bytes
        );
        assert_eq!(stage.used(), r.footprint_bytes);
    });
}

#[test]
fn a_load_whose_request_is_cancelled_gives_its_memory_back() {
    runtime().block_on(async {
        // Room for one model: beta can load only once alpha's reservation is returned.
        let (stage, _) = stage_for(1.5, None, Duration::from_secs(30));
        let mut events = stage.events().subscribe();
        let loading = stage.clone();
        let first = tokio::spawn(async move { loading.acquire("alpha").await.map(|_| ()) });
        loop {
            let e = events.recv().await.unwrap();
            if matches!(&e.kind, EventKind::ModelLoading { model, .. } if model == "alpha") {
                break;
            }
        }
        // Cancelled in the middle of its load.
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        assert_eq!(play(&stage, "beta").await, BETA);
        assert!(!stage.is_resident("alpha"));
        // The cancellation really came during the load: alpha never finished loading.
        while let Ok(e) = events.try_recv() {
            assert!(
                !matches!(&e.kind, EventKind::ModelLoaded { model, .. } if model == "alpha"),
                "alpha finished loading before the cancel; the test did not cancel a load"
            );
        }
        // Nothing is left reserved: the budget holds beta alone.
        let beta = stage
            .resident()
            .into_iter()
            .find(|r| r.name == "beta")
            .unwrap();
        assert_eq!(stage.used(), beta.footprint_bytes);
    });
}

/// Waits (on the bus, no polling) until `model` starts loading.
async fn until_loading(
    events: &mut tokio::sync::broadcast::Receiver<orchestra::events::Event>,
    model: &str,
) {
    loop {
        let e = events.recv().await.unwrap();
        if matches!(&e.kind, EventKind::ModelLoading { model: m, .. } if m == model) {
            return;
        }
    }
}

async fn greedy_text(lease: &Lease) -> String {
    let req = GenerateRequest::user("hi").with_sampling(SamplingParams::greedy());
    lease.generate(req).unwrap().finish().await.unwrap().text
}

#[test]
fn an_acquire_dropped_in_the_middle_of_its_load_gives_its_memory_back() {
    runtime().block_on(async {
        // Room for one model: beta can load only once alpha's reservation is returned.
        let (stage, _) = stage_for(1.5, None, Duration::from_secs(30));
        let mut events = stage.events().subscribe();
        // The acquire future itself is dropped (what a timeout or a disconnecting
        // client does), not a task around it.
        tokio::select! {
            _ = stage.acquire("alpha") => panic!("alpha must still be loading"),
            _ = until_loading(&mut events, "alpha") => {}
        }
        // beta needs the whole budget: it gets it once the abandoned load ends.
        assert_eq!(play(&stage, "beta").await, BETA);
        assert!(!stage.is_resident("alpha"));
        assert_eq!(stage.reserved(), 0);
        let beta = stage.resident()[0].footprint_bytes;
        assert_eq!(stage.used(), beta, "the budget holds beta alone");
        while let Ok(e) = events.try_recv() {
            assert!(
                !matches!(&e.kind, EventKind::ModelLoaded { model, .. } if model == "alpha"),
                "alpha finished loading before the drop; the test did not cancel a load"
            );
        }
    });
}

#[test]
fn a_failed_load_leaves_no_reservation_behind() {
    runtime().block_on(async {
        let (stage, _) = stage_for(1.5, None, Duration::from_secs(1));
        // A file whose header reads but whose tensor data is cut short.
        let whole = std::fs::read(rehearsal("alpha", ALPHA, TensorType::Q8_0)).unwrap();
        let cut = scratch().join("alpha-cut.gguf");
        std::fs::write(&cut, &whole[..whole.len() * 2 / 3]).unwrap();
        stage.add(ModelSpec::new("cut", &cut).with_options(options()));
        let err = match stage.acquire("cut").await {
            Err(e) => e,
            Ok(_) => panic!("a cut file must not load"),
        };
        assert!(matches!(err, StageError::Load { .. }), "{err}");
        assert_eq!(stage.reserved(), 0);
        assert_eq!(stage.used(), 0);
        // The whole budget is still there for a model that needs it.
        assert_eq!(play(&stage, "beta").await, BETA);
    });
}

#[test]
fn removing_a_playing_model_keeps_its_memory_counted_until_it_finishes() {
    runtime().block_on(async {
        let (stage, _) = stage_for(3.5, None, Duration::from_secs(1));
        let mut events = stage.events().subscribe();
        let lease = stage.acquire("alpha").await.unwrap();
        let held = stage.used();
        assert!(stage.remove("alpha"));
        assert!(!stage.names().contains(&"alpha".to_string()));
        assert_eq!(
            stage.used(),
            held,
            "alpha still plays: its memory is still in use"
        );
        drop(stage.acquire("gamma").await.unwrap());
        // It finishes what it plays, then leaves.
        assert_eq!(greedy_text(&lease).await, ALPHA);
        let gamma = stage.used() - held;
        drop(lease);
        assert_eq!(
            stage.used(),
            gamma,
            "alpha's memory came back with its last lease"
        );
        let mut left = false;
        while let Ok(e) = events.try_recv() {
            if let EventKind::ModelEvicted { model, reason } = e.kind {
                left |= model == "alpha" && reason.contains("removed");
            }
        }
        assert!(left, "alpha's eviction is announced when it really goes");
    });
}

#[test]
fn a_model_pointed_at_another_file_plays_the_new_file() {
    runtime().block_on(async {
        let (stage, _) = stage_for(3.5, None, Duration::from_secs(1));
        let old = stage.acquire("alpha").await.unwrap();
        let old_bytes = stage.used();
        // The score now names beta's file for `alpha`, while alpha plays.
        let beta_file = rehearsal("beta", BETA, TensorType::Q8_0);
        stage.add(ModelSpec::new("alpha", &beta_file).with_options(options()));
        let new = stage.acquire("alpha").await.unwrap();
        assert!(!new.same_as(&old), "a new request gets the new file");
        assert_eq!(greedy_text(&new).await, BETA);
        // The old copy finishes its request, counted until then.
        assert_eq!(greedy_text(&old).await, ALPHA);
        let both = stage.used();
        assert!(both > old_bytes, "both copies are counted while both play");
        drop(old);
        assert_eq!(
            stage.used(),
            both - old_bytes,
            "the old copy left with its lease"
        );
        drop(new);
        // The name keeps playing the new file.
        assert_eq!(play(&stage, "alpha").await, BETA);
        assert_eq!(stage.status().models[0].path, beta_file);
    });
}

/// A random-weights model whose weights (about 30 MB) outweigh its KV cache and
/// compute buffers, written once.
fn weighty_model() -> std::path::PathBuf {
    let path = scratch().join("weighty-q8_0.gguf");
    if !path.exists() {
        let spec = orchestra::synth::LlamaSpec {
            seed: 11,
            ..orchestra::synth::LlamaSpec::new("weighty", 512, 8, 8, 8, 1536, TensorType::Q8_0)
        };
        let tmp = path.with_extension("part");
        orchestra::synth::write_model(&spec, &tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

async fn babble(lease: &Lease) -> String {
    let req = GenerateRequest::user("play something")
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(24);
    lease.generate(req).unwrap().finish().await.unwrap().text
}

#[test]
fn two_instruments_on_one_file_share_one_copy_of_its_weights() {
    runtime().block_on(async {
        let path = weighty_model();
        let fp = estimate(&path, &options()).unwrap();
        // Room for the weights once and two contexts, far from room for them twice.
        let budget = fp.total() + (fp.kv + fp.compute) * 3 / 2;
        assert!(budget < 2 * fp.total() - fp.weights / 2, "{fp:?}");
        let metrics = Metrics::new();
        let stage = Stage::with_metrics(
            StageConfig {
                budget,
                idle_ttl: None,
                wait_for_room: Duration::from_secs(1),
            },
            EventBus::new(),
            metrics.clone(),
        );
        stage.add(ModelSpec::new("solo", &path).with_options(options()));
        stage.add(ModelSpec::new("twin", &path).with_options(options()));
        let solo = stage.acquire("solo").await.unwrap();
        let alone = babble(&solo).await;
        assert!(!alone.is_empty());
        let twin = stage.acquire("twin").await.unwrap();
        // llama.cpp loaded the file once: the second instrument reused the weights.
        assert!(!solo.info().weights_shared);
        assert!(twin.info().weights_shared);
        assert!(solo.shares_weights_with(&twin) && !solo.same_as(&twin));
        // Separate contexts and workers: both play at once, each as the model alone.
        let (a, b) = tokio::join!(babble(&solo), babble(&twin));
        assert_eq!((a.as_str(), b.as_str()), (alone.as_str(), alone.as_str()));
        // The weights are counted once: in the budget, the status and the metrics.
        let weights = solo.info().weight_bytes;
        let together = solo.info().footprint() + twin.info().footprint() - weights;
        assert_eq!(stage.used(), together);
        assert!(stage.used() <= stage.budget());
        let status = stage.status();
        let of = |n: &str| status.models.iter().find(|m| m.name == n).unwrap().clone();
        assert_eq!(of("solo").footprint_bytes, Some(solo.info().footprint()));
        assert_eq!(
            of("twin").footprint_bytes,
            Some(twin.info().footprint() - weights)
        );
        assert_eq!(of("solo").weights_shared_with, vec!["twin".to_string()]);
        assert_eq!(status.used, together);
        let text = metrics.encode();
        let line = format!(
            "orchestra_resident_bytes{{instrument=\"twin\"}} {}",
            twin.info().footprint() - weights
        );
        assert!(text.contains(&line), "{line} missing from\n{text}");
        // Evicting one keeps the other working; the survivor now carries the weights.
        drop(solo);
        assert!(stage.evict("solo").unwrap());
        assert_eq!(babble(&twin).await, alone);
        assert_eq!(stage.used(), twin.info().footprint());
        let line = format!(
            "orchestra_resident_bytes{{instrument=\"twin\"}} {}",
            twin.info().footprint()
        );
        assert!(metrics.encode().contains(&line), "{line}");
    });
}

#[test]
fn the_kv_cache_and_compute_figures_are_what_llama_cpp_allocated() {
    let path = rehearsal("alpha", ALPHA, TensorType::Q8_0);
    for (context, slots) in [(256, 1), (300, 3)] {
        let options = LoadOptions {
            context,
            slots,
            ..LoadOptions::default()
        };
        let model = Model::load(&path, &options).unwrap();
        let info = model.info();
        assert!(info.kv_measured && info.compute_measured, "{info:?}");
        // The estimate's KV formula gives llama.cpp's allocation to the byte (the log
        // reports MiB with two decimals).
        let fp = estimate(&path, &options).unwrap();
        assert!(
            info.kv_bytes.abs_diff(fp.kv) <= 6 << 10,
            "{context}x{slots}: llama.cpp allocated {} for the KV cache, the formula says {}",
            info.kv_bytes,
            fp.kv
        );
        // The compute estimate is a little above llama.cpp's figure, never below.
        assert!(
            fp.compute >= info.compute_bytes && fp.compute <= info.compute_bytes / 4 * 5,
            "compute: measured {}, estimated {}",
            info.compute_bytes,
            fp.compute
        );
    }
}

#[test]
fn a_q8_0_kv_cache_takes_about_half_the_memory_and_plays_the_same_script() {
    let path = rehearsal("alpha", ALPHA, TensorType::Q8_0);
    let play = |kv_cache| {
        let options = LoadOptions {
            context: 512,
            slots: 2,
            kv_cache,
            ..LoadOptions::default()
        };
        let model = Model::load(&path, &options).unwrap();
        let info = model.info().clone();
        let fp = estimate(&path, &options).unwrap();
        assert!(info.kv_measured, "{info:?}");
        // The estimate knows the type: llama.cpp's allocation, to the byte.
        assert!(
            info.kv_bytes.abs_diff(fp.kv) <= 6 << 10,
            "{kv_cache:?}: llama.cpp allocated {}, the formula says {}",
            info.kv_bytes,
            fp.kv
        );
        let text = model
            .generate(
                GenerateRequest::user("play something")
                    .with_sampling(SamplingParams::greedy())
                    .with_max_tokens(24),
            )
            .unwrap()
            .blocking_finish_with(|_| {})
            .unwrap()
            .text;
        (info.kv_bytes, text)
    };
    let (f16, f16_text) = play(KvCache::F16);
    let (q8, q8_text) = play(KvCache::Q8_0);
    // 34 bytes per 32 values against 64 (llama.cpp reports MiB to two decimals).
    let ratio = q8 as f64 / f16 as f64;
    assert!(
        (ratio - 34.0 / 64.0).abs() < 0.03,
        "f16 {f16} B, q8_0 {q8} B"
    );
    assert_eq!(q8_text, f16_text);
    assert!(!q8_text.is_empty());
}

/// The KV figure of a real model: measured, and equal to the formula from its
/// metadata. Gemma 3's heads are wider than `n_embd / n_head`.
fn real_kv(which: Real) -> (u64, u64, orchestra::engine::ModelInfo) {
    let path = real_model(which);
    let options = LoadOptions {
        context: 1024,
        slots: 2,
        ..LoadOptions::default()
    };
    let model = Model::load(&path, &options).unwrap();
    let info = model.info().clone();
    assert!(info.kv_measured, "{which:?}: llama.cpp reported no KV size");
    let fp = estimate(&path, &options).unwrap();
    assert!(
        fp.compute >= info.compute_bytes && fp.compute <= info.compute_bytes / 4 * 5,
        "{which:?} compute: measured {}, estimated {}",
        info.compute_bytes,
        fp.compute
    );
    let formula = fp.kv;
    eprintln!(
        "{which:?}: KV measured {} B, formula {formula} B; compute measured {} B, estimated {} B; vocab {} embd {} batch {} n_ctx {}",
        info.kv_bytes,
        info.compute_bytes,
        estimate(&path, &options).unwrap().compute,
        info.n_vocab,
        info.n_embd,
        info.batch,
        info.n_ctx
    );
    (info.kv_bytes, formula, info)
}

#[test]
#[ignore = "needs the real test models: scripts/fetch-test-models"]
fn real_kv_cache_figures_match_the_formula_from_their_metadata() {
    for which in [Real::Qwen, Real::Gemma] {
        let (measured, formula, info) = real_kv(which);
        assert!(
            measured.abs_diff(formula) <= 6 << 10,
            "{which:?}: measured {measured}, formula {formula}"
        );
        // What the old `n_embd / n_head` formula said.
        let naive = info.n_layer as u64
            * info.n_ctx as u64
            * (info.n_embd / info.n_head as i32) as u64
            * info.n_head_kv as u64
            * 4;
        if which == Real::Gemma {
            assert!(
                measured > naive + (1 << 20),
                "Gemma 3's 256-wide heads: measured {measured}, n_embd/n_head gives {naive}"
            );
        } else {
            assert!(measured.abs_diff(naive) <= 6 << 10);
        }
    }
}
