//! Embedding requests are batched like generations: requests that arrive together
//! share decode calls, and each gets the vectors it would get alone.

mod common;

use common::band_dir;
use orchestra::engine::{Cores, LoadOptions, Model};

#[test]
fn concurrent_embedding_requests_share_decode_calls_and_get_the_same_vectors() {
    let model = Model::load(
        band_dir().join("monk.gguf"),
        &LoadOptions {
            embeddings: true,
            context: 128,
            slots: 4,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let texts: Vec<String> = (0..8)
        .map(|i| format!("walking bass line number {i} {}", "ride ".repeat(i)))
        .collect();
    let rt = common::runtime();

    let before = model.decode_stats().decode_calls;
    let alone: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| rt.block_on(model.embed(vec![t.clone()])).unwrap().remove(0))
        .collect();
    assert_eq!(
        model.decode_stats().decode_calls - before,
        texts.len() as u64
    );

    // Hold the cores while the requests arrive, so they are all waiting together.
    let before = model.decode_stats().decode_calls;
    let together = rt.block_on(async {
        let hold = Cores::global().reserve(Cores::global().total());
        let mut pending: Vec<_> = texts
            .iter()
            .map(|t| Box::pin(model.embed(vec![t.clone()])))
            .collect();
        for p in &mut pending {
            // The first poll sends the request to the worker.
            assert!(futures::poll!(p.as_mut()).is_pending());
        }
        drop(hold);
        futures::future::join_all(pending).await
    });
    let calls = model.decode_stats().decode_calls - before;
    // Four sequences a decode call (the model's slots).
    assert_eq!(calls, 2, "8 requests took {calls} decode calls");
    for (i, (got, want)) in together.into_iter().zip(&alone).enumerate() {
        let got = got.unwrap();
        assert_eq!(got.len(), 1);
        let diff = got[0]
            .iter()
            .zip(want)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "request {i}: vectors differ by {diff}");
    }
}
