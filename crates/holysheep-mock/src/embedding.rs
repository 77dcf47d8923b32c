//! How the mock turns text into an embedding vector: see [`EmbeddingMode`].

use serde::{Deserialize, Serialize};

use crate::answer::{SplitMix64, fnv1a};

/// How `POST /v1/embeddings` computes its vectors. Both are deterministic: the same model, text
/// and dimension always give the same unit vector.
///
/// Neither is a language model: they are stand-ins for tests, benches and the demo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmbeddingMode {
    /// A pseudo-random unit vector seeded from the model and the exact text: any two different
    /// texts are about orthogonal. The default.
    #[default]
    Random,
    /// Vectors that reflect word overlap (see [`word_overlap_embedding`]): texts made of the same
    /// words in the same order are close, whatever their case, punctuation or contractions; a
    /// text with other words, or the same words in another order, is not. What a semantic cache
    /// is tested and demonstrated with.
    WordOverlap,
}

/// Words dropped before features are taken: politeness that does not change a question.
const FILLERS: &[&str] = &["please", "kindly", "hey", "hi", "hello"];

/// The word-overlap embedding of `text` in `dimensions` dimensions (at least 1): a normalised,
/// signed, hashed bag of features.
///
/// The text is lower-cased, common English contractions are spelled out (`what's` → `what is`,
/// `don't` → `do not`), every character that is not a letter or a digit separates words, and a
/// few fillers (`please`, `hi`, …) are dropped. The features are the words **and the runs of two
/// and three neighbouring words**: the runs carry word order, so "does the dog bite the man" and
/// "does the man bite the dog" (same words, another question) are far apart, where a plain bag of
/// words would make them identical. Each feature adds ±1 to one coordinate, both picked by a stable
/// hash of the feature; the sum is scaled to unit length (a text with no words gets a fixed unit
/// vector of its own).
///
/// ```
/// use holysheep_mock::word_overlap_embedding;
///
/// let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
/// let france = word_overlap_embedding("What's the capital of France?", 256);
/// let again = word_overlap_embedding("what is the capital of france", 256);
/// let spain = word_overlap_embedding("What's the capital of Spain?", 256);
/// assert!(cos(&france, &again) > 0.99);
/// assert!(cos(&france, &spain) < 0.9);
/// ```
pub fn word_overlap_embedding(text: &str, dimensions: usize) -> Vec<f32> {
    let dimensions = dimensions.max(1);
    let words = words(text);
    let mut sums = vec![0f64; dimensions];
    let mut add = |feature: &[&[u8]]| {
        let h = fnv1a(feature);
        let slot = (h % dimensions as u64) as usize;
        // A second, independent bit for the sign, so colliding features cancel on average.
        let sign = if SplitMix64(h).next_u64() & 1 == 0 {
            1.0
        } else {
            -1.0
        };
        sums[slot] += sign;
    };
    for word in &words {
        add(&[b"w\0", word.as_bytes()]);
    }
    for pair in words.windows(2) {
        add(&[b"p\0", pair[0].as_bytes(), b" ", pair[1].as_bytes()]);
    }
    for triple in words.windows(3) {
        let [a, b, c] = [&triple[0], &triple[1], &triple[2]].map(String::as_bytes);
        add(&[b"t\0", a, b" ", b, b" ", c]);
    }
    let norm = sums.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm == 0.0 {
        let mut unit = vec![0f32; dimensions];
        unit[0] = 1.0;
        return unit;
    }
    sums.iter().map(|x| (x / norm) as f32).collect()
}

/// The words of `text`: lower-cased, contractions spelled out, fillers dropped.
fn words(text: &str) -> Vec<String> {
    let lower = text.to_lowercase().replace(['’', '‘'], "'");
    let mut out = Vec::new();
    for raw in lower.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
        let raw = raw.trim_matches('\'');
        if raw.is_empty() {
            continue;
        }
        for word in expand(raw) {
            let word: String = word.chars().filter(|c| c.is_alphanumeric()).collect();
            if !word.is_empty() && !FILLERS.contains(&word.as_str()) {
                out.push(word);
            }
        }
    }
    out
}

/// Spells out a contraction: `what's` → `what is`, `can't` → `can not`, `i'm` → `i am`.
fn expand(word: &str) -> Vec<&str> {
    match word {
        "can't" => return vec!["can", "not"],
        "won't" => return vec!["will", "not"],
        "i'm" => return vec!["i", "am"],
        _ => {}
    }
    for (suffix, spelled) in [
        ("n't", "not"),
        ("'s", "is"),
        ("'re", "are"),
        ("'ve", "have"),
        ("'ll", "will"),
        ("'d", "would"),
    ] {
        if let Some(stem) = word.strip_suffix(suffix)
            && !stem.is_empty()
        {
            return vec![stem, spelled];
        }
    }
    vec![word]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn case_punctuation_and_contractions_do_not_matter() {
        let a = word_overlap_embedding("What's the capital of France?", 256);
        let b = word_overlap_embedding("  what is the CAPITAL of france  ", 256);
        assert!((cos(&a, &b) - 1.0).abs() < 1e-6);
        let c = word_overlap_embedding("Please, what is the capital of France!", 256);
        assert!((cos(&a, &c) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn other_words_or_another_order_are_far() {
        let a = word_overlap_embedding("What's the capital of France?", 256);
        let spain = word_overlap_embedding("What's the capital of Spain?", 256);
        assert!(cos(&a, &spain) < 0.9, "{}", cos(&a, &spain));
        let dog = word_overlap_embedding("Does the dog bite the man?", 256);
        let man = word_overlap_embedding("Does the man bite the dog?", 256);
        assert!(cos(&dog, &man) < 0.9, "{}", cos(&dog, &man));
    }

    #[test]
    fn vectors_are_unit_and_deterministic() {
        for text in [
            "",
            "?!",
            "one",
            "a much longer question about connection pools",
        ] {
            let v = word_overlap_embedding(text, 64);
            assert_eq!(v.len(), 64);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{text:?}: {norm}");
            assert_eq!(v, word_overlap_embedding(text, 64));
        }
        assert_eq!(word_overlap_embedding("x", 0).len(), 1);
    }
}
