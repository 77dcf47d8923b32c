//! Precision and recall of the semantic cache's mechanism on a labelled set of paraphrase and
//! non-paraphrase pairs (`tests/data/paraphrases.tsv`), with the mock upstream's word-overlap
//! embeddings at the default threshold.
//!
//! This measures the mechanism — quantised vectors, cosine, threshold — with a stand-in embedder,
//! **not** a real embedding model: a real model finds far more paraphrases (the mock only sees
//! shared words in the same order) and has failure modes of its own. The one number that must
//! hold whatever the embedder: no pair labelled `different` may be a hit.

use holysheep_semantic::SemanticCacheLayer;
use holysheep_semantic::index::Quantized;

fn pairs() -> Vec<(bool, &'static str, &'static str)> {
    include_str!("data/paraphrases.tsv")
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let mut cols = line.split('\t');
            let label = cols.next().expect("a label");
            let (a, b) = (
                cols.next().expect("a question"),
                cols.next().expect("another"),
            );
            assert!(matches!(label, "same" | "different"), "{line}");
            (label == "same", a, b)
        })
        .collect()
}

/// Vectors of the default dimension. With 256 the mock's hashed features collide more often: a
/// collision once made "…two values in Go?" and "…two values in C?" score 0.952, a wrong hit.
fn similarity(a: &str, b: &str) -> f32 {
    let dims = SemanticCacheLayer::DEFAULT_EMBEDDING_DIMENSIONS as usize;
    let embed = |t| Quantized::new(&holysheep_mock::word_overlap_embedding(t, dims)).unwrap();
    embed(a).cosine(&embed(b))
}

#[test]
fn the_mock_embedder_never_hits_a_different_question() {
    let threshold = SemanticCacheLayer::DEFAULT_THRESHOLD;
    let (mut tp, mut fp, mut fn_, mut tn) = (0, 0, 0, 0);
    for (same, a, b) in pairs() {
        let hit = similarity(a, b) >= threshold;
        match (same, hit) {
            (true, true) => tp += 1,
            (false, true) => {
                fp += 1;
                eprintln!("wrong hit: {a:?} ~ {b:?} ({})", similarity(a, b));
            }
            (true, false) => fn_ += 1,
            (false, false) => tn += 1,
        }
    }
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let recall = tp as f64 / (tp + fn_).max(1) as f64;
    println!(
        "mock word-overlap embedder at {threshold}: {tp} true hits, {fp} wrong hits, {fn_} missed paraphrases, {tn} right misses; precision {precision:.2}, recall {recall:.2}"
    );
    assert_eq!(fp, 0, "a different question was answered");
    assert_eq!(tn, 20);
    // The paraphrases that only change case, punctuation, contractions or fillers are found;
    // rewordings are not (see the module docs).
    assert_eq!(
        (tp, fn_),
        (17, 7),
        "recall moved: update README and BENCHMARKS"
    );
}
