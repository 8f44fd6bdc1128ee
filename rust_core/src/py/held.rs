//! Rate capacity a worker took ahead from the shared counters (`watchllm/limits/
//! prefetch.py`): `HeldRates` counts what is left of one grant and admits a request from
//! it in one call, with the response's `x-ratelimit-*` headers, as a `RateGrant`. The
//! grant's round trips, its return and the settle's deferred deltas stay in Python.
use super::rates::{push_group, RateGrant};
use super::CoreError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

/// A header group as given: the limit's header as sent, the names of the two that change,
/// the tightest row's remaining and reset (ms) right after the grant, whether it counts
/// tokens, and its ms per unit.
type GroupArg = (Py<PyTuple>, Py<PyBytes>, Py<PyBytes>, i64, i64, bool, f64);

struct Group {
    limit: Py<PyTuple>,
    remaining_name: Py<PyBytes>,
    reset_name: Py<PyBytes>,
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
}
