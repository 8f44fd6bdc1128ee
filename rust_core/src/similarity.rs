//! Cosine-similarity top-k over per-namespace float32 storage. Pure Rust.
//!
//! Vectors are normalised at insert (norm computed sequentially in f64, then each
//! component rounded to f32), so a search is one dot product per stored row,
//! accumulated in f64 (products of two f32 are exact in f64, so the Python twin
//! agrees to ~1e-15). The dot loop is memory-bound; on x86-64 an AVX2+FMA version
//! is chosen at run time.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::RwLock;

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
        let q: Vec<f64> = self.normalise(query)?.into_iter().map(f64::from).collect();
        let spaces = self.spaces.read().unwrap_or_else(|e| e.into_inner());
        let Some(space) = spaces.get(namespace).filter(|_| k > 0) else {
            return Ok(Vec::new());
        };
        let mut heap: BinaryHeap<Hit<'_>> = BinaryHeap::with_capacity(k + 1);
        for (row, chunk) in space.data.chunks_exact(self.dim).enumerate() {
            let score = dot(chunk, &q);
            if score.partial_cmp(&threshold).is_none_or(Ordering::is_lt) {
                continue;
            }
            let hit = Hit {
                score,
                id: &space.ids[row],
            };
            if heap.len() < k {
                heap.push(hit);
            } else if heap.peek().is_some_and(|worst| hit < *worst) {
                heap.pop();
                heap.push(hit);
            }
        }
        let hits = heap.into_sorted_vec();
        Ok(hits.into_iter().map(|h| (h.id.clone(), h.score)).collect())
    }
}

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

/// Σ a[i]·b[i] in f64.
pub fn dot(a: &[f32], b: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features `dot_avx2` is compiled for.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

/// AVX2+FMA: 16 components per step in four 4-lane f64 accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f64]) -> f64 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_pd(); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 4 * j + 4 <= i + 16 <= n, so both loads stay in bounds.
            let (x, y) = unsafe {
                (
                    _mm_loadu_ps(pa.add(i + 4 * j)),
                    _mm256_loadu_pd(pb.add(i + 4 * j)),
                )
            };
            *acc = _mm256_fmadd_pd(_mm256_cvtps_pd(x), y, *acc);
        }
        i += 16;
    }
    let sum = _mm256_add_pd(_mm256_add_pd(acc[0], acc[1]), _mm256_add_pd(acc[2], acc[3]));
    let mut lanes = [0.0f64; 4];
    // SAFETY: `lanes` has room for four f64.
    unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), sum) };
    let mut total = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for k in i..n {
        total += f64::from(a[k]) * b[k];
    }
    total
}

/// Eight independent accumulators so the loop vectorises without reassociation.
/// Each product of two f32 is exact in f64, so mul+add equals a fused multiply-add.
fn dot_portable(a: &[f32], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += f64::from(x[i]) * y[i];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += f64::from(*x) * *y;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

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

    #[test]
    fn dot_matches_naive() {
        for n in [0, 1, 15, 16, 17, 37, 384] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32).sin()).collect();
            let b: Vec<f64> = (0..n).map(|i| f64::from(i as f32).cos()).collect();
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-12);
            assert!((dot_portable(&a, &b) - naive).abs() < 1e-12);
        }
    }
}
