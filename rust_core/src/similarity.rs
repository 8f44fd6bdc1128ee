//! Cosine-similarity top-k over per-namespace float32 storage. Pure Rust.
//!
//! Vectors are normalised at insert (norm computed sequentially in f64, then each
//! component rounded to f32), so a search is one f32 dot product per stored row.
//! The dot product has a fixed, documented evaluation order (`dot`), so its result
//! is the same bit pattern on every CPU and in the Python twin. The scan is
//! memory-bound; on x86-64 an AVX-512 or AVX2 build of the same loop is chosen at
//! run time.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::RwLock;

mod dot;
pub use dot::{dot, score_rows, LANES};

/// Why a vector or query was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorError(pub String);

impl std::fmt::Display for VectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VectorError {}

#[derive(Default)]
struct Space {
    ids: Vec<String>,
    rows: HashMap<String, usize>,
    data: Vec<f32>,
}

/// A thread-safe cosine index: namespace → (id → unit vector).
pub struct VectorIndex {
    dim: usize,
    spaces: RwLock<HashMap<String, Space>>,
}

impl VectorIndex {
    pub fn new(dim: usize) -> Result<Self, VectorError> {
        if dim == 0 {
            return Err(VectorError("dimension must be positive".into()));
        }
        Ok(Self {
            dim,
            spaces: RwLock::new(HashMap::new()),
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The unit vector (rounded to f32) of `v`, or an error for a wrong length,
    /// a non-finite component or a zero vector.
    pub fn normalise(&self, v: &[f64]) -> Result<Vec<f32>, VectorError> {
        if v.len() != self.dim {
            return Err(VectorError(format!(
                "vector has {} dimensions, the index has {}",
                v.len(),
                self.dim
            )));
        }
        let mut sq = 0.0f64;
        for &x in v {
            if !x.is_finite() {
                return Err(VectorError("vector has a non-finite component".into()));
            }
            sq += x * x;
        }
        let norm = sq.sqrt();
        if norm == 0.0 {
            return Err(VectorError("zero vector has no direction".into()));
        }
        if !norm.is_finite() {
            return Err(VectorError("vector norm overflows".into()));
        }
        Ok(v.iter().map(|&x| (x / norm) as f32).collect())
    }

    /// Inserts or replaces `id` in `namespace`.
    pub fn add(&self, namespace: &str, id: &str, v: &[f64]) -> Result<(), VectorError> {
        let unit = self.normalise(v)?;
        let mut spaces = self.spaces.write().unwrap_or_else(|e| e.into_inner());
        let space = spaces.entry(namespace.to_owned()).or_default();
        if let Some(&row) = space.rows.get(id) {
            space.data[row * self.dim..(row + 1) * self.dim].copy_from_slice(&unit);
        } else {
            space.rows.insert(id.to_owned(), space.ids.len());
            space.ids.push(id.to_owned());
            space.data.extend_from_slice(&unit);
        }
        Ok(())
    }

    /// Removes `id`; returns whether it was there.
    pub fn remove(&self, namespace: &str, id: &str) -> bool {
        let mut spaces = self.spaces.write().unwrap_or_else(|e| e.into_inner());
        let Some(space) = spaces.get_mut(namespace) else {
            return false;
        };
        let Some(row) = space.rows.remove(id) else {
            return false;
        };
        let last = space.ids.len() - 1;
        if row != last {
            let (dim, moved) = (self.dim, space.ids[last].clone());
            space
                .data
                .copy_within(last * dim..(last + 1) * dim, row * dim);
            space.rows.insert(moved.clone(), row);
            space.ids[row] = moved;
        }
        space.ids.pop();
        space.data.truncate(last * self.dim);
        if space.ids.is_empty() {
            spaces.remove(namespace);
        }
        true
    }

    pub fn len(&self) -> usize {
        let spaces = self.spaces.read().unwrap_or_else(|e| e.into_inner());
        spaces.values().map(|s| s.ids.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn namespace_len(&self, namespace: &str) -> usize {
        let spaces = self.spaces.read().unwrap_or_else(|e| e.into_inner());
        spaces.get(namespace).map_or(0, |s| s.ids.len())
    }

    /// The `k` ids most similar to `query` with cosine ≥ `threshold`, best first,
    /// ties by id ascending.
    pub fn search(
        &self,
        namespace: &str,
        query: &[f64],
        k: usize,
        threshold: f64,
    ) -> Result<Vec<(String, f64)>, VectorError> {
        let q = self.normalise(query)?;
        let spaces = self.spaces.read().unwrap_or_else(|e| e.into_inner());
        let Some(space) = spaces.get(namespace).filter(|_| k > 0) else {
            return Ok(Vec::new());
        };
        let mut heap: BinaryHeap<Hit<'_>> = BinaryHeap::with_capacity(k + 1);
        let mut scores = [0.0f32; BLOCK];
        for (b, block) in space.data.chunks(BLOCK * self.dim).enumerate() {
            let scores = &mut scores[..block.len() / self.dim];
            score_rows(block, &q, scores);
            for (r, &score) in scores.iter().enumerate() {
                let score = f64::from(score);
                if score.partial_cmp(&threshold).is_none_or(Ordering::is_lt) {
                    continue;
                }
                let hit = Hit {
                    score,
                    id: &space.ids[b * BLOCK + r],
                };
                if heap.len() < k {
                    heap.push(hit);
                } else if heap.peek().is_some_and(|worst| hit < *worst) {
                    heap.pop();
                    heap.push(hit);
                }
            }
        }
        let hits = heap.into_sorted_vec();
        Ok(hits.into_iter().map(|h| (h.id.clone(), h.score)).collect())
    }
}

/// Rows scored per call of `score_rows` before their scores go to the heap.
const BLOCK: usize = 256;

/// Ordered "better first": a < b when a has the higher score, or the same score
/// and the smaller id. The max-heap therefore keeps the worst hit on top.
struct Hit<'a> {
    score: f64,
    id: &'a String,
}

impl Ord for Hit<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| self.id.cmp(other.id))
    }
}

impl PartialOrd for Hit<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Hit<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Hit<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_search_remove() {
        let idx = VectorIndex::new(3).unwrap();
        idx.add("n", "a", &[1.0, 0.0, 0.0]).unwrap();
        idx.add("n", "b", &[1.0, 1.0, 0.0]).unwrap();
        idx.add("n", "c", &[0.0, 0.0, 5.0]).unwrap();
        idx.add("m", "a", &[0.0, 1.0, 0.0]).unwrap();
        assert_eq!(idx.len(), 4);
        let hits = idx.search("n", &[2.0, 0.0, 0.0], 2, 0.5).unwrap();
        assert_eq!(hits[0].0, "a");
        assert!((hits[0].1 - 1.0).abs() < 1e-6);
        assert_eq!(hits[1].0, "b");
        assert!((hits[1].1 - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(idx.search("n", &[1.0, 0.0, 0.0], 5, 0.9).unwrap().len(), 1);
        assert!(idx.remove("n", "a"));
        assert!(!idx.remove("n", "a"));
        assert_eq!(idx.namespace_len("n"), 2);
        assert_eq!(idx.search("n", &[1.0, 0.0, 0.0], 1, 0.0).unwrap()[0].0, "b");
        idx.add("n", "b", &[0.0, 0.0, 1.0]).unwrap(); // replace
        assert_eq!(idx.namespace_len("n"), 2);
    }

    #[test]
    fn ties_by_id_and_errors() {
        let idx = VectorIndex::new(2).unwrap();
        for id in ["z", "y", "x"] {
            idx.add("n", id, &[1.0, 1.0]).unwrap();
        }
        let ids: Vec<String> = idx
            .search("n", &[1.0, 1.0], 3, -1.0)
            .unwrap()
            .into_iter()
            .map(|h| h.0)
            .collect();
        assert_eq!(ids, ["x", "y", "z"]);
        assert!(idx.add("n", "a", &[0.0, 0.0]).is_err());
        assert!(idx.add("n", "a", &[1.0]).is_err());
        assert!(idx.search("n", &[f64::NAN, 1.0], 1, 0.0).is_err());
    }
}
