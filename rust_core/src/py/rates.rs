//! The in-process admission of rates-only callers (`watchllm/limits/ops.py`'s
//! `MemoryLimiter.check_rates`), in one call: GCRA CHECK of each of a plan's rate ops on
//! the limiter's own dict of states, all-or-nothing, and the `x-ratelimit-*` headers of
//! the result. The same arithmetic as `ops.rate()` (exact integers; every value here is
//! non-negative, so Rust's division is Python's floor division). In Python it is ~40k
//! interpreter instructions per request; here a few thousand.
use super::CoreError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

/// What may be charged: `MAX_DEBT` windows past a full bucket (ops.MAX_DEBT).
const MAX_DEBT: i128 = 16;

struct Row {
    key: Py<PyString>,
    limit: i128,
    window: i128,
    per_token: bool,
}

/// A header group as given: (limit, remaining, reset) names, the rows it reports on.
type GroupArg = ((Py<PyBytes>, Py<PyBytes>, Py<PyBytes>), Vec<usize>);

struct Group {
    rows: Vec<usize>,
    /// The `(limit name, limit)` header of each of `rows`: the same every request.
    limits: Vec<Py<PyTuple>>,
    remaining_name: Py<PyBytes>,
    reset_name: Py<PyBytes>,
}

/// A caller's rate ops, built once per (project, key, limits): `rows` are
/// `(key, limit, window_ms, costs tokens)`, `groups` the header names
/// (limit, remaining, reset) and the row indices they report on (the tightest).
#[pyclass(frozen)]
pub struct RatePlan {
    rows: Vec<Row>,
    groups: Vec<Group>,
}

#[pymethods]
impl RatePlan {
    #[new]
    fn new(
        py: Python<'_>,
        rows: Vec<(Py<PyString>, i64, i64, bool)>,
        groups: Vec<GroupArg>,
    ) -> PyResult<Self> {
        let mut out = Vec::with_capacity(rows.len());
        for (key, limit, window, per_token) in rows {
            if limit <= 0 || window <= 0 {
                return Err(CoreError::new_err("rate limit and window must be positive"));
            }
            out.push(Row {
                key,
                limit: limit.into(),
                window: window.into(),
                per_token,
            });
        }
        let mut grouped = Vec::with_capacity(groups.len());
        for ((a, b, c), idx) in groups {
            if idx.is_empty() || idx.iter().any(|&i| i >= out.len()) {
                return Err(CoreError::new_err("header group names no row"));
            }
            let limits = idx
                .iter()
                .map(|&i| {
                    let pair = [
                        a.bind(py).clone().into_any(),
                        int_bytes(py, out[i].limit).into_any(),
                    ];
                    PyTuple::new(py, pair).map(Bound::unbind)
                })
                .collect::<PyResult<_>>()?;
            grouped.push(Group {
                rows: idx,
                limits,
                remaining_name: b,
                reset_name: c,
            });
        }
        Ok(RatePlan {
            rows: out,
            groups: grouped,
        })
    }
}

/// `a / b` and `a % b` for the non-negative values here: in 64 bits when they fit (the
/// common case; 128-bit division is a library call of ~100 instructions).
fn div_rem(a: i128, b: i128) -> (i128, i128) {
    match (i64::try_from(a), i64::try_from(b)) {
        (Ok(x), Ok(y)) => ((x / y).into(), (x % y).into()),
        _ => (a / b, a % b),
    }
}

/// A decimal integer as Python bytes, without a String in between.
fn int_bytes(py: Python<'_>, value: i128) -> Bound<'_, PyBytes> {
    PyBytes::new(py, itoa::Buffer::new().format(value).as_bytes())
}

/// `duration` as Python bytes; under a second (nearly every reset) without formatting.
fn duration_bytes(py: Python<'_>, ms: i128) -> Bound<'_, PyBytes> {
    if ms >= 1000 {
        return PyBytes::new(py, duration(ms).as_bytes());
    }
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(ms.max(0)).as_bytes();
    let mut out = [0u8; 5]; // "999ms"
    out[..digits.len()].copy_from_slice(digits);
    out[digits.len()..digits.len() + 2].copy_from_slice(b"ms");
    PyBytes::new(py, &out[..digits.len() + 2])
}

/// `d`: the bucket's level in units of 1/L0 ms (0 when empty or stale).
fn level(rates: &Bound<'_, PyDict>, key: &Bound<'_, PyString>, now: i128) -> PyResult<i128> {
    let Some(state) = rates.get_item(key)? else {
        return Ok(0);
    };
    let (tat, rem, l0): (i64, i64, i64) = state.extract()?;
    let tat = i128::from(tat);
    Ok(if tat >= now {
        (tat - now) * i128::from(l0) + i128::from(rem)
    } else {
        0
    })
}

fn store(
    rates: &Bound<'_, PyDict>,
    key: &Bound<'_, PyString>,
    now: i128,
    dn: i128,
    limit: i128,
) -> PyResult<()> {
    let int = |v: i128| i64::try_from(v).map_err(|_| CoreError::new_err("rate state overflows"));
    let (whole, rest) = div_rem(dn, limit);
    let state = (int(now + whole)?, int(rest)?, int(limit)?);
    rates.set_item(key, state)
}

/// OpenAI's reset format (limits/service.py `duration`): "20ms", "1s", "8.64s", "6m0s".
fn duration(ms: i128) -> String {
    if ms < 1000 {
        return format!("{}ms", ms.max(0));
    }
    let (hours, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let secs = format!("{}.{:03}", rest / 1000, rest % 1000);
    let secs = secs.trim_end_matches('0').trim_end_matches('.');
    match (hours, minutes) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// Check and count one request of `tokens` on every row of `plan`: the response's
/// rate-limit headers, or None when a row is over its limit (then nothing is written).
#[pyfunction]
pub fn admit_rates<'py>(
    rates: &Bound<'py, PyDict>,
    plan: &Bound<'py, RatePlan>,
    tokens: i64,
    now_ms: i64,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let py = rates.py();
    let plan = plan.get();
    let now = i128::from(now_ms);
    let mut new = Vec::with_capacity(plan.rows.len());
    for row in &plan.rows {
        let key = row.key.bind(py);
        let cost = if row.per_token { i128::from(tokens) } else { 1 };
        let dn = level(rates, key, now)? + cost * row.window;
        let cap = row.window * row.limit;
        if dn > cap {
            return Ok(None);
        }
        new.push((
            div_rem(cap - dn, row.window).0,
            div_rem(dn + row.limit - 1, row.limit).0,
            dn,
        ));
    }
    for (row, &(_, _, dn)) in plan.rows.iter().zip(&new) {
        store(rates, row.key.bind(py), now, dn, row.limit)?;
    }
    let headers = PyList::empty(py);
    for group in &plan.groups {
        let mut k = 0; // the tightest of the group's rows
        for (n, &j) in group.rows.iter().enumerate().skip(1) {
            if new[j].0 < new[group.rows[k]].0 {
                k = n;
            }
        }
        let (remaining, reset, _) = new[group.rows[k]];
        let remaining = [
            group.remaining_name.bind(py).clone().into_any(),
            int_bytes(py, remaining).into_any(),
        ];
        let reset = [
            group.reset_name.bind(py).clone().into_any(),
            duration_bytes(py, reset).into_any(),
        ];
        headers.append(group.limits[k].bind(py))?;
        headers.append(PyTuple::new(py, remaining)?)?;
        headers.append(PyTuple::new(py, reset)?)?;
    }
    Ok(Some(headers))
}

/// TPM reconciliation: add `delta` tokens (may be negative) to every token row of `plan`,
/// unconditionally (ops ADJUST: clamped to [0, MAX_DEBT full buckets]).
#[pyfunction]
pub fn adjust_rates(
    rates: &Bound<'_, PyDict>,
    plan: &Bound<'_, RatePlan>,
    delta: i64,
    now_ms: i64,
) -> PyResult<()> {
    let py = rates.py();
    let now = i128::from(now_ms);
    for row in plan.get().rows.iter().filter(|r| r.per_token) {
        let key = row.key.bind(py);
        let cap = row.window * row.limit;
        let dn =
            (level(rates, key, now)? + i128::from(delta) * row.window).clamp(0, cap * MAX_DEBT);
        store(rates, key, now, dn, row.limit)?;
    }
    Ok(())
}
