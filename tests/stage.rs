//! The stage on real loads: eviction order under a budget, pinning, never evicting a
//! playing model, refusing a model that cannot fit, shared loads and idle unloads.

mod common;

use std::time::Duration;

use common::{ALPHA, BETA, rehearsal, runtime};
use orchestra::engine::{GenerateRequest, LoadOptions, SamplingParams};
use orchestra::events::{EventBus, EventKind};
use orchestra::stage::{ModelSpec, Stage, StageConfig, StageError, estimate};
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
