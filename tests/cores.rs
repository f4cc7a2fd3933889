//! Models decoding at once share the CPU cores: the threads of the steps running
//! together never exceed the process-wide allotment, two busy models split it, and a
//! model decoding alone uses all of it; and a model done decoding keeps no parked
//! OpenMP threads.

mod common;

use common::{ALPHA, BETA, rehearsal};
use orchestra::engine::{Cores, GenerateRequest, LoadOptions, Model, SamplingParams};
use orchestra::synth::TensorType;

/// The tests here count the process's threads and hold the cores: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn request(tokens: u32) -> GenerateRequest {
    GenerateRequest::user("play a long chorus")
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(tokens)
        .with_ignore_eos(true)
}

fn finish(model: &Model, tokens: u32) -> String {
    let g = model.generate(request(tokens)).unwrap();
    g.blocking_finish_with(|_| {}).unwrap().text
}

#[test]
fn models_decoding_together_split_the_cores_and_one_alone_uses_them_all() {
    let _serial = serial();
    let cores = Cores::global();
    let total = cores.total();
    // Both ask for every core, as models left at the default do.
    let opts = LoadOptions {
        context: 256,
        slots: 2,
        threads: Some(total as i32),
        ..LoadOptions::default()
    };
    let a = Model::load(rehearsal("alpha", ALPHA, TensorType::Q8_0), &opts).unwrap();
    let b = Model::load(rehearsal("beta", BETA, TensorType::Q8_0), &opts).unwrap();

    // Alone, a model decodes with every core.
    let a_alone = finish(&a, 48);
    let b_alone = finish(&b, 48);
    let alone = a.decode_stats();
    assert_eq!((alone.threads_min, alone.threads_max), (total, total));
    assert!(alone.decode_calls >= 48);

    // Together: hold the cores until both workers have their request, so both are
    // busy for the whole of both generations.
    let hold = cores.reserve(total);
    let ga = a.generate(request(48)).unwrap();
    let gb = b.generate(request(48)).unwrap();
    cores.wait_until_busy(2);
    drop(hold);
    let (ta, tb) = std::thread::scope(|s| {
        let ta = s.spawn(|| ga.blocking_finish_with(|_| {}).unwrap().text);
        let tb = s.spawn(|| gb.blocking_finish_with(|_| {}).unwrap().text);
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let (sa, sb) = (a.decode_stats(), b.decode_stats());
    assert!(
        cores.peak() <= total,
        "{} threads at once on {total} cores",
        cores.peak()
    );
    // Each model ran its shared steps with its share, and the shares fit the cores
    // (one core: they take turns with one thread each).
    assert!(
        sa.threads_min + sb.threads_min <= total.max(2),
        "{sa:?} {sb:?} on {total} cores"
    );
    assert!(sa.threads_min >= 1 && sb.threads_min >= 1);
    // Fewer threads do not change what greedy decoding says.
    assert_eq!(ta, a_alone);
    assert_eq!(tb, b_alone);

    // Once the other model is idle, the whole allotment is back.
    finish(&a, 4);
    assert_eq!(a.decode_stats().threads_last, total);
}

fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Wait (bounded) for the process to be back at `want` threads: a thread that has been
/// joined can still be listed for a moment while the kernel reaps it.
fn wait_for_threads(want: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n = os_threads();
        if n <= want || std::time::Instant::now() > deadline {
            return n;
        }
        std::thread::yield_now();
    }
}

/// llama.cpp decodes on an OpenMP team that GNU libgomp parks after each step, one per
/// worker thread; once parked threads outnumber the cores, libgomp makes every barrier
/// in the process sleep instead of spin and every model decodes ~1.5x slower. A worker
/// with nothing left to do gives its team back before its answer goes out.
#[test]
fn a_model_done_decoding_keeps_no_parked_threads() {
    let _serial = serial();
    let total = Cores::global().total();
    let opts = LoadOptions {
        context: 256,
        slots: 1,
        threads: Some(total as i32),
        ..LoadOptions::default()
    };
    let a = Model::load(rehearsal("alpha", ALPHA, TensorType::Q8_0), &opts).unwrap();
    let b = Model::load(rehearsal("beta", BETA, TensorType::Q8_0), &opts).unwrap();
    let idle = os_threads();
    for (name, model) in [("alpha", &a), ("beta", &b), ("alpha again", &a)] {
        finish(model, 8);
        // It did decode with every core (a team of `total` threads on 2+ cores).
        assert_eq!(model.decode_stats().threads_max, total, "{name}");
        // None left over (a thread of the loads may end meanwhile: fewer is no leak).
        let now = wait_for_threads(idle);
        assert!(
            now <= idle,
            "after {name} answered, {} threads are left over from its decode",
            now as isize - idle as isize
        );
    }
}
