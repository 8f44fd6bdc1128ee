//! The in-process rate limiter's states and its one-call admission of rates-only callers
//! (`watchllm/limits/ops.py`'s `MemoryLimiter`). `RateTable` owns every GCRA bucket of the
//! process, key -> (tat_ms, remainder, L0), in a Rust map: the per-request admission
//! (`admit`: CHECK of each of a plan's rate ops, all-or-nothing, and the `x-ratelimit-*`
//! headers of the result) and its settlement (`settle`: TPM reconciliation) read and
//! write them without a Python tuple or integer per bucket. The general batch path reads
//! and writes the same states through the mapping methods (`get`, `[key] = state`).
//! The same arithmetic as `ops.rate()` (exact integers; every value here is
//! non-negative, so Rust's division is Python's floor division).
use super::CoreError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// What may be charged: `MAX_DEBT` windows past a full bucket (ops.MAX_DEBT).
const MAX_DEBT: i128 = 16;

struct Row {
    key: Box<str>,
    limit: i128,
    window: i128,
    per_token: bool,
}

/// A header group as given: (limit, remaining, reset) names, the rows it reports on.
type GroupArg = ((Py<PyString>, Py<PyString>, Py<PyString>), Vec<usize>);

struct Group {
    rows: Vec<usize>,
    /// The `(limit name, limit)` header of each of `rows`: the same every request.
    limits: Vec<Py<PyTuple>>,
    remaining_name: Py<PyString>,
    reset_name: Py<PyString>,
}

/// A caller's rate ops, built once per (project, key, limits): `rows` are
/// `(key, limit, window_ms, costs tokens)`, `groups` the header names
/// (limit, remaining, reset) and the row indices they report on (the tightest).
#[pyclass(frozen, module = "watchllm._core")]
pub struct RatePlan {
    rows: Vec<Row>,
    groups: Vec<Group>,
}

#[pymethods]
impl RatePlan {
    #[new]
    fn new(
        py: Python<'_>,
        rows: Vec<(String, i64, i64, bool)>,
        groups: Vec<GroupArg>,
    ) -> PyResult<Self> {
        let mut out = Vec::with_capacity(rows.len());
        for (key, limit, window, per_token) in rows {
            if limit <= 0 || window <= 0 {
                return Err(CoreError::new_err("rate limit and window must be positive"));
            }
            out.push(Row {
                key: key.into_boxed_str(),
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
                        int_text(py, out[i].limit).into_any(),
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

/// A decimal integer as a Python str (header values are text: see http/asgi.py).
fn int_text(py: Python<'_>, value: i128) -> Bound<'_, PyString> {
    PyString::new(py, itoa::Buffer::new().format(value))
}

/// Append one header group's three `x-ratelimit-*` pairs: its limit's (built once), then
/// the remaining count and the reset time (ms) under their names.
pub(super) fn push_group(
    headers: &Bound<'_, PyList>,
    limit: &Py<PyTuple>,
    (remaining_name, remaining): (&Py<PyString>, i128),
    (reset_name, reset_ms): (&Py<PyString>, i128),
) -> PyResult<()> {
    let py = headers.py();
    let remaining = [
        remaining_name.bind(py).clone().into_any(),
        int_text(py, remaining).into_any(),
    ];
    let reset = [
        reset_name.bind(py).clone().into_any(),
        duration_text(py, reset_ms).into_any(),
    ];
    headers.append(limit.bind(py))?;
    headers.append(PyTuple::new(py, remaining)?)?;
    headers.append(PyTuple::new(py, reset)?)
}

/// `duration` as a Python str; under a second (nearly every reset) without formatting.
fn duration_text(py: Python<'_>, ms: i128) -> Bound<'_, PyString> {
    if ms >= 1000 {
        return PyString::new(py, &duration(ms));
    }
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(ms.max(0)).as_bytes();
    let mut out = [0u8; 5]; // "999ms"
    out[..digits.len()].copy_from_slice(digits);
    out[digits.len()..digits.len() + 2].copy_from_slice(b"ms");
    PyString::new(
        py,
        std::str::from_utf8(&out[..digits.len() + 2]).expect("ASCII digits and ms"),
    )
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

/// Sweep the table at most this often (ops.MemoryLimiter sweeps its other states alike).
const SWEEP_MS: i64 = 60_000;

/// One bucket: `tat` (ms) and `rem` (units of 1/`l0` ms) past it; `l0` its limit.
#[derive(Clone, Copy, PartialEq, Eq)]
struct State {
    tat: i64,
    rem: i64,
    l0: i64,
}

impl State {
    /// `d`: the bucket's level in units of 1/L0 ms (0 when empty or stale).
    fn level(self, now: i128) -> i128 {
        let tat = i128::from(self.tat);
        if tat >= now {
            (tat - now) * i128::from(self.l0) + i128::from(self.rem)
        } else {
            0
        }
    }

    /// The state of level `dn` at `now` for `limit` (ops: `(now + dn // L, dn % L, L)`).
    fn at(now: i128, dn: i128, limit: i128) -> PyResult<State> {
        let int =
            |v: i128| i64::try_from(v).map_err(|_| CoreError::new_err("rate state overflows"));
        let (whole, rest) = div_rem(dn, limit);
        Ok(State {
            tat: int(now + whole)?,
            rem: int(rest)?,
            l0: int(limit)?,
        })
    }
}

/// A request admitted by `RateTable.admit`: its response headers, its token estimate, and
/// whether `RateTable.settle` has reconciled it (once only).
///
/// Made in process by `RateTable.admit` (`owner`: its `RatePlan`) or from a prefetch by
/// `HeldRates.take` (`owner`: the caller's `HeldSlot`, whose `settle` reconciles it).
#[pyclass(frozen, module = "watchllm._core")]
pub struct RateGrant {
    #[pyo3(get)]
    rate_headers: Py<PyList>,
    #[pyo3(get)]
    estimated_tokens: i64,
    #[pyo3(get)]
    owner: Py<PyAny>,
    settled: AtomicBool,
}

impl RateGrant {
    pub(super) fn new(headers: Bound<'_, PyList>, estimated_tokens: i64, owner: Py<PyAny>) -> Self {
        RateGrant {
            rate_headers: headers.unbind(),
            estimated_tokens,
            owner,
            settled: AtomicBool::new(false),
        }
    }

    pub(super) fn estimated_tokens(&self) -> i64 {
        self.estimated_tokens
    }
}

#[pymethods]
impl RateGrant {
    #[getter]
    fn settled(&self) -> bool {
        self.settled.load(Ordering::Relaxed)
    }

    /// Mark it settled: True the first time, False after (a settle runs once).
    pub(super) fn mark_settled(&self) -> bool {
        !self.settled.swap(true, Ordering::Relaxed)
    }
}

fn epoch_ms() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_millis()).unwrap_or(0))
}

/// Every rate bucket of the process (`MemoryLimiter._rate`).
#[pyclass(module = "watchllm._core")]
pub struct RateTable {
    states: FxHashMap<Box<str>, State>,
    sweep_at: i128,
}

impl RateTable {
    fn level(&self, key: &str, now: i128) -> i128 {
        self.states.get(key).map_or(0, |s| s.level(now))
    }

    fn put(&mut self, key: &str, state: State) {
        if let Some(slot) = self.states.get_mut(key) {
            *slot = state;
        } else {
            self.states.insert(key.into(), state);
        }
    }

    /// Add `delta` tokens to every token row of `plan` (ops ADJUST: clamped to
    /// [0, MAX_DEBT full buckets]).
    fn add_tokens(&mut self, plan: &RatePlan, delta: i128, now: i128) -> PyResult<()> {
        for row in plan.rows.iter().filter(|r| r.per_token) {
            let cap = row.window * row.limit;
            let dn = (self.level(&row.key, now) + delta * row.window).clamp(0, cap * MAX_DEBT);
            self.put(&row.key, State::at(now, dn, row.limit)?);
        }
        Ok(())
    }
}

#[pymethods]
impl RateTable {
    #[new]
    fn new() -> Self {
        RateTable {
            states: FxHashMap::default(),
            sweep_at: 0,
        }
    }

    /// Check and count one request of `tokens` on every row of `plan` at `now_ms` (None:
    /// the system clock): its grant, or None when a row is over its limit (then nothing
    /// is written).
    #[pyo3(signature = (plan, tokens, now_ms=None))]
    fn admit(
        &mut self,
        plan: &Bound<'_, RatePlan>,
        tokens: i64,
        now_ms: Option<i64>,
    ) -> PyResult<Option<RateGrant>> {
        let py = plan.py();
        let rate_plan = plan.get();
        let now = now_ms.map_or_else(epoch_ms, i128::from);
        let mut new = Vec::with_capacity(rate_plan.rows.len());
        for row in &rate_plan.rows {
            let cost = if row.per_token { i128::from(tokens) } else { 1 };
            let dn = self.level(&row.key, now) + cost * row.window;
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
        for (row, &(_, _, dn)) in rate_plan.rows.iter().zip(&new) {
            self.put(&row.key, State::at(now, dn, row.limit)?);
        }
        self.sweep_due(i64::try_from(now).unwrap_or(i64::MAX));
        let headers = PyList::empty(py);
        for group in &rate_plan.groups {
            let mut k = 0; // the tightest of the group's rows
            for (n, &j) in group.rows.iter().enumerate().skip(1) {
                if new[j].0 < new[group.rows[k]].0 {
                    k = n;
                }
            }
            let (remaining, reset, _) = new[group.rows[k]];
            push_group(
                &headers,
                &group.limits[k],
                (&group.remaining_name, remaining),
                (&group.reset_name, reset),
            )?;
        }
        Ok(Some(RateGrant::new(
            headers,
            tokens,
            plan.clone().into_any().unbind(),
        )))
    }

    /// TPM reconciliation of `grant` to `real_tokens` (what the request used), once: the
    /// difference from its estimate is added to its plan's token rows.
    #[pyo3(signature = (grant, real_tokens, now_ms=None))]
    fn settle(
        &mut self,
        grant: &Bound<'_, RateGrant>,
        real_tokens: i64,
        now_ms: Option<i64>,
    ) -> PyResult<()> {
        let py = grant.py();
        let grant = grant.get();
        let plan = grant.owner.bind(py).cast::<RatePlan>()?;
        if grant.settled.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        let delta = i128::from(real_tokens.max(0)) - i128::from(grant.estimated_tokens);
        if delta != 0 {
            let now = now_ms.map_or_else(epoch_ms, i128::from);
            self.add_tokens(plan.get(), delta, now)?;
        }
        Ok(())
    }

    /// Add `delta` tokens (may be negative) to every token row of `plan`, unconditionally.
    fn adjust(&mut self, plan: &Bound<'_, RatePlan>, delta: i64, now_ms: i64) -> PyResult<()> {
        self.add_tokens(plan.get(), delta.into(), now_ms.into())
    }

    /// A bucket's state `(tat_ms, remainder, L0)`, or None.
    fn get(&self, key: &str) -> Option<(i64, i64, i64)> {
        self.states.get(key).map(|s| (s.tat, s.rem, s.l0))
    }

    fn __setitem__(&mut self, key: &str, state: (i64, i64, i64)) -> PyResult<()> {
        let (tat, rem, l0) = state;
        if l0 <= 0 || rem < 0 {
            return Err(CoreError::new_err(
                "a rate state is (tat_ms, remainder >= 0, L0 > 0)",
            ));
        }
        self.put(key, State { tat, rem, l0 });
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.states.len()
    }

    /// Drop the buckets that no longer limit anything (full again before `now_ms`).
    fn sweep(&mut self, now_ms: i64) {
        self.sweep_at = i128::from(now_ms) + i128::from(SWEEP_MS);
        self.states.retain(|_, s| s.tat >= now_ms);
    }

    /// `sweep` when the last was `SWEEP_MS` ago or more (`admit` does this itself).
    fn sweep_due(&mut self, now_ms: i64) {
        if i128::from(now_ms) >= self.sweep_at {
            self.sweep(now_ms);
        }
    }

    /// Every bucket as a dict (persistence, tests).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (key, s) in &self.states {
            out.set_item(&**key, (s.tat, s.rem, s.l0))?;
        }
        Ok(out)
    }
}
