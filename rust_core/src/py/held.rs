//! Rate capacity a worker took ahead from the shared counters (`watchllm/limits/
//! prefetch.py`): `HeldRates` counts what is left of one grant and admits a request from
//! it in one call, with the response's `x-ratelimit-*` headers, as a `RateGrant`.
//! `HeldSlot` is one caller's place for its current grant: the per-request admission and
//! settle in one call each, so a prefetched request runs no Python frame of the limits
//! package. The grant's round trips, its return and the deltas' ride stay in Python,
//! reached through the slot's callbacks: once per grant or per flush while grants are
//! made; on every request that finds none (then a round trip follows anyway).
use super::rates::{push_group, RateGrant};
use super::CoreError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

/// A header group as given: the limit's header as sent, the names of the two that change,
/// the tightest row's remaining and reset (ms) right after the grant, whether it counts
/// tokens, and its ms per unit.
type GroupArg = (Py<PyTuple>, Py<PyString>, Py<PyString>, i64, i64, bool, f64);

struct Group {
    limit: Py<PyTuple>,
    remaining_name: Py<PyString>,
    reset_name: Py<PyString>,
    base: i64,
    base_reset: f64,
    in_tokens: bool,
    ms_per_unit: f64,
}

/// What is left of one grant of `size` requests and `tokens` tokens, made at `at` (the
/// caller's monotonic clock, seconds) and usable until `until`.
#[pyclass(module = "watchllm._core")]
pub struct HeldRates {
    #[pyo3(get)]
    req: i64,
    #[pyo3(get)]
    tok: i64,
    #[pyo3(get)]
    size: i64,
    #[pyo3(get)]
    tokens: i64,
    #[pyo3(get)]
    at: f64,
    #[pyo3(get)]
    until: f64,
    half_s: f64,
    groups: Vec<Group>,
    owner: Py<PyAny>,
}

#[pymethods]
impl HeldRates {
    /// `owner`: handed to every `RateGrant` taken from it (what its settle needs).
    #[new]
    fn new(
        size: i64,
        tokens: i64,
        at: f64,
        ttl_s: f64,
        groups: Vec<GroupArg>,
        owner: Py<PyAny>,
    ) -> PyResult<Self> {
        if size < 0 || tokens < 0 || ttl_s.is_nan() || ttl_s < 0.0 {
            return Err(CoreError::new_err(
                "a grant's size, tokens and ttl are non-negative",
            ));
        }
        let groups = groups
            .into_iter()
            .map(
                |(limit, rn, sn, base, base_reset, in_tokens, ms_per_unit)| Group {
                    limit,
                    remaining_name: rn,
                    reset_name: sn,
                    base,
                    // Exactly as Python converts it (an int past 2^53 rounds the same way).
                    #[allow(clippy::cast_precision_loss)]
                    base_reset: base_reset as f64,
                    in_tokens,
                    ms_per_unit,
                },
            )
            .collect();
        Ok(HeldRates {
            req: size,
            tok: tokens,
            size,
            tokens,
            at,
            until: at + ttl_s,
            half_s: ttl_s / 2.0,
            groups,
            owner,
        })
    }

    /// Admit one request of `tokens` at `now` (the same clock as `at`): its grant, or None
    /// when this one is used up or past its time (then nothing is taken).
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    fn take(&mut self, py: Python<'_>, tokens: i64, now: f64) -> PyResult<Option<RateGrant>> {
        if now >= self.until || self.req < 1 || self.tok < tokens || tokens < 0 {
            return Ok(None);
        }
        self.req -= 1;
        self.tok -= tokens;
        // x-ratelimit-*: the tightest limit of each group, counting the unused prefetch.
        let elapsed = (now - self.at) * 1000.0;
        let headers = PyList::empty(py);
        for g in &self.groups {
            let left = if g.in_tokens { self.tok } else { self.req };
            // Python's int(): toward zero (a float past i64 saturates; never reached).
            let ms = (g.base_reset - left as f64 * g.ms_per_unit - elapsed) as i64;
            push_group(
                &headers,
                &g.limit,
                (&g.remaining_name, i128::from(g.base) + i128::from(left)),
                (&g.reset_name, i128::from(ms.max(0))),
            )?;
        }
        Ok(Some(RateGrant::new(
            headers,
            tokens,
            self.owner.clone_ref(py),
        )))
    }

    /// Half used, or half its time gone at `now`: time to ask for the next grant, so it
    /// lands before this one runs out.
    fn low(&self, now: f64) -> bool {
        self.req * 2 < self.size || self.tok * 2 < self.tokens || now + self.half_s > self.until
    }

    /// Take what is left, `(requests, tokens)`, leaving nothing (the grant's return).
    fn drain(&mut self) -> (i64, i64) {
        let left = (self.req, self.tok);
        self.req = 0;
        self.tok = 0;
        left
    }

    // `owner` usually leads back here (owner -> its grant -> this): visible to the GC.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.owner)
    }
}

/// One caller's prefetch, as the request path sees it: the grant it takes from now
/// (`held`, set by Python whenever it changes), whether the next one is on its way
/// (`busy`), and the token deltas its settled requests have not yet sent (`pending`).
///
/// Callbacks, each called with no borrow held (they may set `held` and `busy`):
/// `on_miss(now)` when a request finds no usable grant (it then takes the per-request
/// path), `on_low(now)` when a take leaves the grant low and no other is on its way,
/// `on_pending()` when `pending` becomes non-zero after a `drain_pending`.
#[pyclass(module = "watchllm._core")]
pub struct HeldSlot {
    #[pyo3(get, set)]
    held: Option<Py<HeldRates>>,
    #[pyo3(get, set)]
    busy: bool,
    pending: i64,
    watched: bool,
    on_miss: Option<Py<PyAny>>,
    on_low: Option<Py<PyAny>>,
    on_pending: Option<Py<PyAny>>,
}

/// Python's `time.monotonic()`: the clock the grants' times are on (the same call as
/// Python's, whatever clock that is on this platform).
fn monotonic(py: Python<'_>) -> PyResult<f64> {
    static MONOTONIC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    MONOTONIC
        .import(py, "time", "monotonic")?
        .call0()?
        .extract()
}

/// Call a callback if it is still there (`__clear__` drops them).
fn call<'py>(
    py: Python<'py>,
    f: Option<Py<PyAny>>,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyResult<()> {
    if let Some(f) = f {
        f.bind(py).call1(args)?;
    }
    Ok(())
}

#[pymethods]
impl HeldSlot {
    #[new]
    fn new(on_miss: Py<PyAny>, on_low: Py<PyAny>, on_pending: Py<PyAny>) -> Self {
        HeldSlot {
            held: None,
            busy: false,
            pending: 0,
            watched: false,
            on_miss: Some(on_miss),
            on_low: Some(on_low),
            on_pending: Some(on_pending),
        }
    }

    /// Admit one request of `tokens` at `now` (the grants' clock; None: Python's
    /// `time.monotonic()`, read here) from the held grant: its `RateGrant` (owned by this
    /// slot), or None (`on_miss` was told).
    #[pyo3(signature = (tokens, now=None))]
    fn take(slf: &Bound<'_, Self>, tokens: i64, now: Option<f64>) -> PyResult<Option<RateGrant>> {
        let py = slf.py();
        let now = match now {
            Some(now) => now,
            None => monotonic(py)?,
        };
        let held = slf.borrow().held.as_ref().map(|h| h.clone_ref(py));
        let got = match &held {
            Some(h) => h.bind(py).borrow_mut().take(py, tokens, now)?,
            None => None,
        };
        let Some(got) = got else {
            let f = slf.borrow().on_miss.as_ref().map(|f| f.clone_ref(py));
            call(py, f, (now,))?;
            return Ok(None);
        };
        let this = slf.borrow();
        if !this.busy && held.is_some_and(|h| h.bind(py).borrow().low(now)) {
            let f = this.on_low.as_ref().map(|f| f.clone_ref(py));
            drop(this);
            call(py, f, (now,))?;
        }
        Ok(Some(got))
    }

    /// Settle a grant taken from this slot with the request's real token count (once per
    /// grant; later calls do nothing): its difference from the estimate is added to
    /// `pending`, for the next ride to the shared counters.
    fn settle(
        slf: &Bound<'_, Self>,
        grant: &Bound<'_, RateGrant>,
        real_tokens: i64,
    ) -> PyResult<()> {
        let grant = grant.borrow();
        if !grant.mark_settled() {
            return Ok(());
        }
        let delta = real_tokens.max(0).saturating_sub(grant.estimated_tokens());
        if delta == 0 {
            return Ok(());
        }
        let mut this = slf.borrow_mut();
        this.pending = this.pending.saturating_add(delta);
        if this.watched {
            return Ok(());
        }
        this.watched = true;
        let f = this.on_pending.as_ref().map(|f| f.clone_ref(slf.py()));
        drop(this);
        call(slf.py(), f, ())
    }

    /// The token delta not yet sent, now taken (the next settle with a delta calls
    /// `on_pending` again).
    fn drain_pending(&mut self) -> i64 {
        self.watched = false;
        std::mem::take(&mut self.pending)
    }

    #[getter]
    fn pending(&self) -> i64 {
        self.pending
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.held)?;
        visit.call(&self.on_miss)?;
        visit.call(&self.on_low)?;
        visit.call(&self.on_pending)
    }

    fn __clear__(&mut self) {
        self.held = None;
        self.on_miss = None;
        self.on_low = None;
        self.on_pending = None;
    }
}
