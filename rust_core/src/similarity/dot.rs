//! The dot product of the similarity scan: f32, one fixed evaluation order, several
//! code paths (AVX-512, AVX2, portable) that all give the same bits.

/// Lanes of the dot product: component `i` is accumulated in lane `i % LANES`.
pub const LANES: usize = 16;

/// Rows scored together, so each query chunk is loaded once per `ROWS` rows and
/// the rows' dependency chains overlap. It does not change any row's arithmetic.
const ROWS: usize = 4;

/// Rows ahead of the current group that the x86-64 loops prefetch.
const PREFETCH: usize = 8;

/// Σ a[i]·b[i] in f32 with a fixed evaluation order, identical on every CPU:
///
/// 1. every product `a[i] * b[i]` is rounded to f32 (a multiply, then an add:
///    never a fused multiply-add);
/// 2. lane `j` (0 ≤ j < 16) starts at +0.0 and adds the products of components
///    j, j + 16, j + 32, … in that order;
/// 3. the 16 lanes are summed as a fixed tree: `l[j] + l[j + 8]` (j < 8), then
///    `+ [j + 4]` (j < 4), then `+ [j + 2]` (j < 2), then `[0] + [1]`.
///
/// That is what one 16-lane (AVX-512) or two 8-lane (AVX2) registers compute
/// naturally; every code path below produces this same bit pattern, and so does
/// the Python twin (`watchllm/_twins/_vector.py`).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    dot_one(&a[..n], &b[..n])
}

/// Scores of consecutive `dim`-sized rows of `data` against `q` into `out`
/// (one score per row; `out.len()` rows are scored).
pub fn score_rows(data: &[f32], q: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { score_rows_avx512(data, q, out) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { score_rows_avx2(data, q, out) };
        }
    }
    score_rows_portable(data, q, out);
}

/// Rows of `dim` floats, `ROWS` at a time, then the remainder one by one.
#[inline(always)]
fn for_row_groups(
    data: &[f32],
    dim: usize,
    out: &mut [f32],
    mut group: impl FnMut(&[f32], &mut [f32; ROWS]),
    mut single: impl FnMut(&[f32]) -> f32,
) {
    let n = out.len().min(data.len() / dim);
    let (data, out) = (&data[..n * dim], &mut out[..n]);
    let mut outs = out.chunks_exact_mut(ROWS);
    let mut rows = data.chunks_exact(ROWS * dim);
    for (o, r) in (&mut outs).zip(&mut rows) {
        if let Ok(o) = <&mut [f32; ROWS]>::try_from(o) {
            group(r, o);
        }
    }
    for (o, r) in outs
        .into_remainder()
        .iter_mut()
        .zip(rows.remainder().chunks_exact(dim))
    {
        *o = single(r);
    }
}

/// AVX-512: one 16-lane register per row, `ROWS` rows per pass over `q`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn score_rows_avx512(data: &[f32], q: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let dim = q.len();
    if dim < LANES {
        return score_rows_portable(data, q, out);
    }
    let full = dim - dim % LANES;
    let finish = |acc: __m512, row: &[f32]| -> f32 {
        let mut lanes = [0.0f32; LANES];
        // SAFETY: `lanes` holds 16 f32.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
        tail_and_reduce(lanes, row, q, full)
    };
    for_row_groups(
        data,
        dim,
        out,
        |rows, o| {
            let p = rows.as_ptr();
            let mut acc = [_mm512_setzero_ps(); ROWS];
            let mut i = 0;
            while i < full {
                // SAFETY: i + 16 <= full <= dim, and `rows` holds ROWS * dim floats.
                let qv = unsafe { _mm512_loadu_ps(q.as_ptr().add(i)) };
                for (r, acc) in acc.iter_mut().enumerate() {
                    // A hint only: prefetching past the end of `data` is harmless.
                    _mm_prefetch::<_MM_HINT_T0>(
                        p.wrapping_add(PREFETCH * dim + r * dim + i).cast(),
                    );
                    // SAFETY: as above.
                    let x = unsafe { _mm512_loadu_ps(p.add(r * dim + i)) };
                    *acc = _mm512_add_ps(*acc, _mm512_mul_ps(x, qv));
                }
                i += LANES;
            }
            for (r, acc) in acc.into_iter().enumerate() {
                o[r] = finish(acc, &rows[r * dim..(r + 1) * dim]);
            }
        },
        |row| {
            let mut acc = _mm512_setzero_ps();
            for (x, y) in row[..full].chunks_exact(LANES).zip(q.chunks_exact(LANES)) {
                // SAFETY: both chunks hold 16 f32.
                let (x, y) = unsafe { (_mm512_loadu_ps(x.as_ptr()), _mm512_loadu_ps(y.as_ptr())) };
                acc = _mm512_add_ps(acc, _mm512_mul_ps(x, y));
            }
            finish(acc, row)
        },
    );
}

/// AVX2: two 8-lane registers per row (lanes 0–7 and 8–15).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn score_rows_avx2(data: &[f32], q: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let dim = q.len();
    if dim < LANES {
        return score_rows_portable(data, q, out);
    }
    let full = dim - dim % LANES;
    let finish = |acc: [__m256; 2], row: &[f32]| -> f32 {
        let mut lanes = [0.0f32; LANES];
        // SAFETY: `lanes` holds 16 f32.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
        }
        tail_and_reduce(lanes, row, q, full)
    };
    for_row_groups(
        data,
        dim,
        out,
        |rows, o| {
            let p = rows.as_ptr();
            let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
            let mut i = 0;
            while i < full {
                // SAFETY: i + 16 <= full <= dim, and `rows` holds ROWS * dim floats.
                let (q0, q1) = unsafe {
                    (
                        _mm256_loadu_ps(q.as_ptr().add(i)),
                        _mm256_loadu_ps(q.as_ptr().add(i + 8)),
                    )
                };
                for (r, acc) in acc.iter_mut().enumerate() {
                    // A hint only: prefetching past the end of `data` is harmless.
                    _mm_prefetch::<_MM_HINT_T0>(
                        p.wrapping_add(PREFETCH * dim + r * dim + i).cast(),
                    );
                    // SAFETY: as above.
                    let (x0, x1) = unsafe {
                        (
                            _mm256_loadu_ps(p.add(r * dim + i)),
                            _mm256_loadu_ps(p.add(r * dim + i + 8)),
                        )
                    };
                    acc[0] = _mm256_add_ps(acc[0], _mm256_mul_ps(x0, q0));
                    acc[1] = _mm256_add_ps(acc[1], _mm256_mul_ps(x1, q1));
                }
                i += LANES;
            }
            for (r, acc) in acc.into_iter().enumerate() {
                o[r] = finish(acc, &rows[r * dim..(r + 1) * dim]);
            }
        },
        |row| {
            let mut acc = [_mm256_setzero_ps(); 2];
            for (x, y) in row[..full].chunks_exact(LANES).zip(q.chunks_exact(LANES)) {
                // SAFETY: both chunks hold 16 f32.
                unsafe {
                    let (x0, y0) = (_mm256_loadu_ps(x.as_ptr()), _mm256_loadu_ps(y.as_ptr()));
                    let (x1, y1) = (
                        _mm256_loadu_ps(x.as_ptr().add(8)),
                        _mm256_loadu_ps(y.as_ptr().add(8)),
                    );
                    acc[0] = _mm256_add_ps(acc[0], _mm256_mul_ps(x0, y0));
                    acc[1] = _mm256_add_ps(acc[1], _mm256_mul_ps(x1, y1));
                }
            }
            finish(acc, row)
        },
    );
}

/// Adds components `full..` of `row · q` to their lanes, then sums the lanes
/// (steps 2 and 3 of `dot`).
#[inline(always)]
fn tail_and_reduce(mut lanes: [f32; LANES], row: &[f32], q: &[f32], full: usize) -> f32 {
    for (i, (x, y)) in row.iter().zip(q).enumerate().skip(full) {
        lanes[i % LANES] += x * y;
    }
    let l: [f32; 8] = std::array::from_fn(|j| lanes[j] + lanes[j + 8]);
    let l: [f32; 4] = std::array::from_fn(|j| l[j] + l[j + 4]);
    let l: [f32; 2] = std::array::from_fn(|j| l[j] + l[j + 2]);
    l[0] + l[1]
}

/// Portable: plain arrays of 16 lanes (the compiler vectorises the lane loop).
fn score_rows_portable(data: &[f32], q: &[f32], out: &mut [f32]) {
    let dim = q.len();
    if dim == 0 {
        return out.fill(0.0);
    }
    let full = dim - dim % LANES;
    for_row_groups(
        data,
        dim,
        out,
        |rows, o| {
            let mut acc = [[0.0f32; LANES]; ROWS];
            for (c, qc) in q[..full].chunks_exact(LANES).enumerate() {
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = &rows[r * dim + c * LANES..r * dim + (c + 1) * LANES];
                    for j in 0..LANES {
                        acc[j] += x[j] * qc[j];
                    }
                }
            }
            for (r, acc) in acc.into_iter().enumerate() {
                o[r] = tail_and_reduce(acc, &rows[r * dim..(r + 1) * dim], q, full);
            }
        },
        |row| dot_one(row, q),
    );
}

/// One row, portable (see `dot` for the order).
fn dot_one(row: &[f32], q: &[f32]) -> f32 {
    let full = q.len() - q.len() % LANES;
    let mut acc = [0.0f32; LANES];
    for (x, y) in row[..full].chunks_exact(LANES).zip(q.chunks_exact(LANES)) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    tail_and_reduce(acc, row, q, full)
}

#[cfg(test)]
mod tests {
    use super::*;

    type ScoreRows = fn(&[f32], &[f32], &mut [f32]);

    /// The documented order, written out one operation at a time.
    fn dot_reference(a: &[f32], b: &[f32]) -> f32 {
        let mut lanes = [0.0f32; LANES];
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let p = x * y;
            lanes[i % LANES] += p;
        }
        let mut width = LANES / 2;
        while width > 0 {
            for j in 0..width {
                lanes[j] += lanes[j + width];
            }
            width /= 2;
        }
        lanes[0]
    }

    #[test]
    fn every_path_gives_the_reference_bits() {
        for n in [0, 1, 15, 16, 17, 37, 383, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin() * 1e-3).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 1.3).cos()).collect();
            let want = dot_reference(&a, &b);
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x * *y)).sum();
            assert!((f64::from(want) - naive).abs() < 1e-6);
            assert_eq!(dot(&a, &b).to_bits(), want.to_bits(), "n={n}");
            // 7 rows: one block of 4 and a remainder of 3, on every path.
            let data: Vec<f32> = (0..7)
                .flat_map(|r| a.iter().map(move |x| x * r as f32))
                .collect();
            let want: Vec<u32> = data
                .chunks_exact(n.max(1))
                .map(|r| dot_reference(r, &b).to_bits())
                .collect();
            let mut paths: Vec<ScoreRows> = vec![score_rows, score_rows_portable];
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    paths.push(|d, q, o| unsafe { score_rows_avx2(d, q, o) });
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    paths.push(|d, q, o| unsafe { score_rows_avx512(d, q, o) });
                }
            }
            if n == 0 {
                continue;
            }
            for path in paths {
                let mut out = [f32::NAN; 7];
                path(&data, &b, &mut out);
                let got: Vec<u32> = out.iter().map(|x| x.to_bits()).collect();
                assert_eq!(got, want, "n={n}");
            }
        }
    }
}
