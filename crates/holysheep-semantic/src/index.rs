//! [`SemanticIndex`]: the in-process nearest-neighbour index, one per context bucket.
//!
//! Vectors are kept quantised to `i8` (each scaled so its largest component is ±127: cosine
//! ignores the scale), a quarter of `f32`'s memory; the bench shows recall@1 against `f32` brute
//! force. A bucket of up to [`BRUTE_FORCE_MAX`] vectors is scanned exactly; a larger one moves into
//! an HNSW graph ([`usearch`], chosen by measurement: see BENCHMARKS.md, "Semantic cache").
//! Entries expire at their time (unix milliseconds, so every instance of a fleet agrees), and
//! the least recent expiry is evicted first when the byte bound is reached.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// Buckets up to this many vectors are scanned exactly; larger ones are searched in an HNSW
/// graph. At 1,536 dimensions an exact scan of 256 vectors takes about as long as a graph search.
pub const BRUTE_FORCE_MAX: usize = 256;

/// What one entry is charged beyond its `dimensions` bytes of vector: the graph links of an HNSW
/// node (16 neighbours a level, 32 on the base level, 4 bytes each), the bookkeeping maps and the
/// stored key. The bench compares it with measured memory.
const ENTRY_OVERHEAD: usize = 320;

/// HNSW parameters: neighbours per node, candidates while inserting and while searching.
const CONNECTIVITY: usize = 16;
const EXPANSION_ADD: usize = 128;
const EXPANSION_SEARCH: usize = 64;

/// How many graph neighbours a search asks for, so an expired or replaced one can be skipped.
const CANDIDATES: usize = 4;

/// A context bucket: the hash of everything a semantic match requires to be equal.
pub type BucketId = u128;

/// A vector quantised to `i8`, with the norm of its quantised form.
#[derive(Clone, PartialEq)]
pub struct Quantized {
    values: Box<[i8]>,
    norm: f32,
}

impl Quantized {
    /// Quantises `vector`: each component scaled so the largest is ±127. `None` for an empty
    /// vector, or one with a non-finite or all-zero component set.
    pub fn new(vector: &[f32]) -> Option<Self> {
        let max = vector.iter().fold(0f32, |m, x| m.max(x.abs()));
        if vector.is_empty() || vector.iter().any(|x| !x.is_finite()) || max == 0.0 {
            return None;
        }
        let values: Box<[i8]> = vector
            .iter()
            .map(|x| (x / max * 127.0).round().clamp(-127.0, 127.0) as i8)
            .collect();
        Self::from_values(values)
    }

    /// A quantised vector as sent between instances. `None` if it is empty or all zero.
    pub fn from_values(values: Box<[i8]>) -> Option<Self> {
        let norm = (values.iter().map(|&v| i32::from(v).pow(2)).sum::<i32>() as f32).sqrt();
        (norm > 0.0).then_some(Self { values, norm })
    }

    /// The quantised components.
    pub fn values(&self) -> &[i8] {
        &self.values
    }

    /// The number of dimensions.
    pub fn dimensions(&self) -> usize {
        self.values.len()
    }

    /// The cosine similarity of two quantised vectors of the same dimension (0 otherwise).
    pub fn cosine(&self, other: &Quantized) -> f32 {
        if self.values.len() != other.values.len() {
            return 0.0;
        }
        let dot: i32 = self
            .values
            .iter()
            .zip(other.values.iter())
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
        dot as f32 / (self.norm * other.norm)
    }
}

impl fmt::Debug for Quantized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quantized")
            .field("dimensions", &self.values.len())
            .finish_non_exhaustive()
    }
}

/// The best stored question for a query, as [`SemanticIndex::search`] finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// The cache key of the stored answer.
    pub key: Arc<str>,
    /// The cosine similarity of the query to the stored question.
    pub similarity: f32,
    /// When the vector was inserted (unix milliseconds).
    pub inserted_at: u64,
}

/// An in-process index of question vectors, by context bucket, bounded in bytes.
///
/// Cheap to share behind an `Arc`; every method takes `&self`.
///
/// ```
/// use holysheep_semantic::index::{Quantized, SemanticIndex, now_millis};
///
/// let index = SemanticIndex::new(1 << 20);
/// let stored = Quantized::new(&[0.6, 0.8, 0.0]).unwrap();
/// index.insert(7, "holysheep:cache:gpt-4.1:abc".into(), stored, now_millis() + 60_000);
/// let query = Quantized::new(&[0.59, 0.8, 0.05]).unwrap();
/// let found = index.search(7, &query).unwrap();
/// assert!(found.similarity > 0.99);
/// assert!(index.search(8, &query).is_none()); // another context: never compared
/// ```
pub struct SemanticIndex {
    inner: Mutex<Inner>,
}

struct Inner {
    buckets: HashMap<BucketId, Bucket>,
    /// Every entry by expiry, for TTL and for eviction at the byte bound.
    expiry: BTreeSet<(u64, BucketId, u64)>,
    bytes: usize,
    max_bytes: usize,
    next_id: u64,
}

struct Bucket {
    dimensions: usize,
    slots: HashMap<u64, Slot>,
    by_key: HashMap<Arc<str>, u64>,
    /// Set once the bucket outgrew [`BRUTE_FORCE_MAX`]: its vectors then live in the graph.
    graph: Option<Index>,
}

struct Slot {
    key: Arc<str>,
    expires_at: u64,
    inserted_at: u64,
    /// `None` once the vector lives in the graph.
    vector: Option<Quantized>,
}

impl SemanticIndex {
    /// An empty index holding at most about `max_bytes` of vectors and bookkeeping.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                buckets: HashMap::new(),
                expiry: BTreeSet::new(),
                bytes: 0,
                max_bytes,
                next_id: 1,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `vector` in `bucket` as the question whose answer is under `key`, until
    /// `expires_at` (unix milliseconds). A vector already stored for `key` in that bucket is
    /// replaced. A vector of another dimension than the bucket's is refused (returns `false`).
    pub fn insert(
        &self,
        bucket: BucketId,
        key: Arc<str>,
        vector: Quantized,
        expires_at: u64,
    ) -> bool {
        let now = now_millis();
        if expires_at <= now {
            return false;
        }
        let mut inner = self.lock();
        inner.expire(now);
        let cost = vector.dimensions() + key.len() + ENTRY_OVERHEAD;
        if cost > inner.max_bytes {
            return false;
        }
        if let Some(b) = inner.buckets.get(&bucket)
            && b.dimensions != vector.dimensions()
        {
            return false;
        }
        if let Some(id) = inner
            .buckets
            .get(&bucket)
            .and_then(|b| b.by_key.get(&key))
            .copied()
        {
            inner.remove_entry(bucket, id);
        }
        while inner.bytes + cost > inner.max_bytes {
            let Some(&(_, b, id)) = inner.expiry.first() else {
                break;
            };
            inner.remove_entry(b, id);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let dimensions = vector.dimensions();
        let b = inner.buckets.entry(bucket).or_insert_with(|| Bucket {
            dimensions,
            slots: HashMap::new(),
            by_key: HashMap::new(),
            graph: None,
        });
        if !b.add(id, &key, vector, expires_at, now) {
            if b.slots.is_empty() {
                inner.buckets.remove(&bucket);
            }
            return false;
        }
        inner.expiry.insert((expires_at, bucket, id));
        inner.bytes += cost;
        true
    }

    /// The most similar live question stored in `bucket`, if any.
    pub fn search(&self, bucket: BucketId, query: &Quantized) -> Option<Match> {
        let now = now_millis();
        let mut inner = self.lock();
        inner.expire(now);
        let b = inner.buckets.get(&bucket)?;
        if b.dimensions != query.dimensions() {
            return None;
        }
        let (id, similarity) = match &b.graph {
            None => b
                .slots
                .iter()
                .filter_map(|(id, s)| s.vector.as_ref().map(|v| (*id, v.cosine(query))))
                .max_by(|a, b| a.1.total_cmp(&b.1))?,
            Some(graph) => {
                let found = graph
                    .search(query.values(), CANDIDATES.min(b.slots.len()))
                    .ok()?;
                found
                    .keys
                    .iter()
                    .zip(&found.distances)
                    .find(|(id, _)| b.slots.contains_key(id))
                    // usearch's cosine distance is 1 - similarity.
                    .map(|(id, d)| (*id, 1.0 - d))?
            }
        };
        let slot = b.slots.get(&id)?;
        Some(Match {
            key: Arc::clone(&slot.key),
            similarity,
            inserted_at: slot.inserted_at,
        })
    }

    /// Removes the vector stored for `key` in `bucket`; whether there was one.
    pub fn remove(&self, bucket: BucketId, key: &str) -> bool {
        let mut inner = self.lock();
        let Some(id) = inner
            .buckets
            .get(&bucket)
            .and_then(|b| b.by_key.get(key))
            .copied()
        else {
            return false;
        };
        inner.remove_entry(bucket, id);
        true
    }

    /// How many live vectors the index holds (expired ones are dropped first).
    pub fn len(&self) -> usize {
        let mut inner = self.lock();
        inner.expire(now_millis());
        inner.expiry.len()
    }

    /// Whether the index holds no live vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes the index is charged for, against its bound.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The bytes `usearch` reports for the HNSW graphs of the buckets that outgrew
    /// [`BRUTE_FORCE_MAX`] (its `memory_usage`, reserved capacity included): a measured
    /// counterpart to [`bytes`](Self::bytes), which is an estimate. Vectors of smaller buckets
    /// and the bookkeeping maps are not in it.
    pub fn graph_memory(&self) -> usize {
        self.lock()
            .buckets
            .values()
            .filter_map(|b| b.graph.as_ref())
            .map(Index::memory_usage)
            .sum()
    }

    /// How many context buckets hold vectors.
    pub fn buckets(&self) -> usize {
        self.lock().buckets.len()
    }
}

impl fmt::Debug for SemanticIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("SemanticIndex")
            .field("entries", &inner.expiry.len())
            .field("buckets", &inner.buckets.len())
            .field("bytes", &inner.bytes)
            .field("max_bytes", &inner.max_bytes)
            .finish()
    }
}

impl Inner {
    /// Drops every entry whose time has come.
    fn expire(&mut self, now: u64) {
        while let Some(&(at, bucket, id)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.remove_entry(bucket, id);
        }
    }

    fn remove_entry(&mut self, bucket: BucketId, id: u64) {
        let Some(b) = self.buckets.get_mut(&bucket) else {
            return;
        };
        let Some(slot) = b.slots.remove(&id) else {
            return;
        };
        if b.by_key.get(&slot.key) == Some(&id) {
            b.by_key.remove(&slot.key);
        }
        if let Some(graph) = &b.graph {
            // A failed removal leaves a node whose id no slot has: searches skip it.
            let _ = graph.remove(id);
        }
        self.expiry.remove(&(slot.expires_at, bucket, id));
        self.bytes = self
            .bytes
            .saturating_sub(b.dimensions + slot.key.len() + ENTRY_OVERHEAD);
        if b.slots.is_empty() {
            self.buckets.remove(&bucket);
        }
    }
}

impl Bucket {
    fn add(
        &mut self,
        id: u64,
        key: &Arc<str>,
        vector: Quantized,
        expires_at: u64,
        now: u64,
    ) -> bool {
        let vector = match &self.graph {
            Some(graph) => {
                if !graph_add(graph, id, &vector) {
                    return false;
                }
                None
            }
            None => Some(vector),
        };
        self.slots.insert(
            id,
            Slot {
                key: Arc::clone(key),
                expires_at,
                inserted_at: now,
                vector,
            },
        );
        self.by_key.insert(Arc::clone(key), id);
        if self.graph.is_none() && self.slots.len() > BRUTE_FORCE_MAX {
            self.graph = self.build_graph();
        }
        true
    }

    /// Moves the bucket's vectors into a new graph; `None` (and the bucket stays a scan) if the
    /// graph cannot be made.
    fn build_graph(&mut self) -> Option<Index> {
        let options = IndexOptions {
            dimensions: self.dimensions,
            metric: MetricKind::Cos,
            quantization: ScalarKind::I8,
            connectivity: CONNECTIVITY,
            expansion_add: EXPANSION_ADD,
            expansion_search: EXPANSION_SEARCH,
            multi: false,
        };
        let graph = Index::new(&options).ok()?;
        graph.reserve(self.slots.len() * 2).ok()?;
        for (id, slot) in &self.slots {
            let vector = slot.vector.as_ref()?;
            if !graph_add(&graph, *id, vector) {
                return None;
            }
        }
        for slot in self.slots.values_mut() {
            slot.vector = None;
        }
        Some(graph)
    }
}

/// Adds to a graph, growing its capacity by doubling.
fn graph_add(graph: &Index, id: u64, vector: &Quantized) -> bool {
    if graph.size() + 1 > graph.capacity() && graph.reserve((graph.capacity() * 2).max(64)).is_err()
    {
        return false;
    }
    graph.add(id, vector.values()).is_ok()
}

/// Now, in unix milliseconds: the clock entries expire by, the same on every instance.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let v: Vec<f32> = (0..dims)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter().map(|a| a / n).collect()
    }

    fn q(v: &[f32]) -> Quantized {
        Quantized::new(v).unwrap()
    }

    #[test]
    fn quantised_cosine_is_close_to_the_real_one() {
        for seed in 1..50 {
            let (a, b) = (unit(seed, 256), unit(seed + 1000, 256));
            let mixed: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + 0.3 * y).collect();
            let real: f32 = {
                let n = mixed.iter().map(|x| x * x).sum::<f32>().sqrt();
                a.iter().zip(&mixed).map(|(x, y)| x * y / n).sum()
            };
            let approx = q(&a).cosine(&q(&mixed));
            assert!((real - approx).abs() < 0.01, "{real} vs {approx}");
        }
        assert!(Quantized::new(&[]).is_none());
        assert!(Quantized::new(&[0.0, 0.0]).is_none());
        assert!(Quantized::new(&[f32::NAN, 1.0]).is_none());
    }

    #[test]
    fn finds_the_nearest_in_its_bucket_only() {
        let index = SemanticIndex::new(1 << 20);
        let far = now_millis() + 60_000;
        assert!(index.insert(1, "a".into(), q(&unit(1, 32)), far));
        assert!(index.insert(1, "b".into(), q(&unit(2, 32)), far));
        assert!(index.insert(2, "c".into(), q(&unit(3, 32)), far));
        let found = index.search(1, &q(&unit(2, 32))).unwrap();
        assert_eq!(&*found.key, "b");
        assert!(found.similarity > 0.999);
        assert_eq!(&*index.search(2, &q(&unit(2, 32))).unwrap().key, "c");
        assert!(index.search(3, &q(&unit(2, 32))).is_none());
        // Another dimension is never compared.
        assert!(index.search(1, &q(&unit(2, 16))).is_none());
        assert!(!index.insert(1, "d".into(), q(&unit(4, 16)), far));
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn replacing_and_removing_keys() {
        let index = SemanticIndex::new(1 << 20);
        let far = now_millis() + 60_000;
        index.insert(1, "a".into(), q(&unit(1, 32)), far);
        index.insert(1, "a".into(), q(&unit(2, 32)), far);
        assert_eq!(index.len(), 1);
        assert!(index.search(1, &q(&unit(2, 32))).unwrap().similarity > 0.999);
        assert!(index.remove(1, "a"));
        assert!(!index.remove(1, "a"));
        assert!(index.search(1, &q(&unit(2, 32))).is_none());
        assert_eq!((index.len(), index.buckets(), index.bytes()), (0, 0, 0));
    }

    #[test]
    fn expired_vectors_are_gone() {
        let index = SemanticIndex::new(1 << 20);
        let now = now_millis();
        assert!(!index.insert(1, "past".into(), q(&unit(1, 32)), now - 1));
        index.insert(1, "soon".into(), q(&unit(1, 32)), now + 150);
        assert!(index.search(1, &q(&unit(1, 32))).is_some());
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(index.search(1, &q(&unit(1, 32))).is_none());
        assert_eq!((index.len(), index.bytes()), (0, 0));
    }

    #[test]
    fn the_byte_bound_evicts_the_soonest_to_expire() {
        let per = 64 + 1 + ENTRY_OVERHEAD;
        let index = SemanticIndex::new(per * 3);
        let now = now_millis();
        for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
            assert!(index.insert(
                1,
                key.into(),
                q(&unit(i as u64, 64)),
                now + 10_000 + i as u64
            ));
        }
        assert_eq!(index.len(), 3);
        assert!(index.bytes() <= per * 3);
        assert!(index.search(1, &q(&unit(0, 64))).unwrap().key.as_ref() != "a");
        assert!(!index.insert(1, "huge".into(), q(&unit(9, 4096)), now + 10_000));
    }

    #[test]
    fn large_buckets_move_to_the_graph_and_still_find_and_forget() {
        let index = SemanticIndex::new(64 << 20);
        let far = now_millis() + 60_000;
        let n = BRUTE_FORCE_MAX as u64 * 3;
        for i in 0..n {
            index.insert(5, format!("k{i}").into(), q(&unit(i, 64)), far);
        }
        let mut exact = 0;
        for i in (0..n).step_by(7) {
            if index.search(5, &q(&unit(i, 64))).unwrap().key.as_ref() == format!("k{i}") {
                exact += 1;
            }
        }
        assert!(exact as f64 >= (n / 7) as f64 * 0.95, "{exact}");
        assert!(index.remove(5, "k14"));
        let after = index.search(5, &q(&unit(14, 64))).unwrap();
        assert_ne!(after.key.as_ref(), "k14");
        assert!(after.similarity < 0.9);
        assert_eq!(index.len() as u64, n - 1);
    }
}
