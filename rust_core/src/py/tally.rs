//! Per-request metrics summed in process (`watchllm/metrics.py`): one call per request
//! adds it to its (route, model, status) aggregate (count, tokens, cost, the latency and
//! time-to-first-token histograms) and counts its cache outcome; `drain` hands the sums
//! to prometheus-client, once a second. The Python twin is `watchllm/_twins/_tally.py`.
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use std::collections::HashMap;
use std::fmt::Write;

struct Aggregate {
    route: Py<PyString>,
    model: Py<PyString>,
    status: i64,
    requests: i64,
    prompt: f64, // token sums as floats, as prometheus keeps them: no overflow
    completion: f64,
    usd: f64,
    latency: Vec<f64>, // a count per bucket, then the sum
    ttft: Vec<f64>,
}

/// The index of the first bound >= `value` (Python's `bisect_left`, "le" buckets).
fn bucket(bounds: &[f64], value: f64) -> usize {
    bounds.partition_point(|b| *b < value)
}

#[pyclass(module = "watchllm._core")]
pub struct RequestTally {
    latency_bounds: Vec<f64>,
    ttft_bounds: Vec<f64>,
    aggregates: HashMap<String, Aggregate>,
    outcomes: HashMap<String, i64>,
    // reused: the lookup of a known aggregate allocates nothing. Route length-prefixed,
    // then model, NUL, status (digits): one key per (route, model, status), whatever NULs
    // the strings hold.
    key: String,
}

#[pymethods]
impl RequestTally {
    /// `latency_bounds` and `ttft_bounds`: the histograms' upper bounds, ascending, the
    /// last one +inf.
    #[new]
    fn new(latency_bounds: Vec<f64>, ttft_bounds: Vec<f64>) -> Self {
        RequestTally {
            latency_bounds,
            ttft_bounds,
            aggregates: HashMap::new(),
            outcomes: HashMap::new(),
            key: String::new(),
        }
    }

    /// One request, at its end. `outcome`: its cache outcome, if it had one.
    #[pyo3(signature = (route, model, status, duration_s, ttft_s=None, prompt_tokens=0.0,
                        completion_tokens=0.0, cost_usd=0.0, outcome=None))]
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        route: &Bound<'_, PyString>,
        model: &Bound<'_, PyString>,
        status: i64,
        duration_s: f64,
        ttft_s: Option<f64>,
        prompt_tokens: f64,
        completion_tokens: f64,
        cost_usd: f64,
        outcome: Option<&str>,
    ) -> PyResult<()> {
        let (r, m) = (route.to_cow()?, model.to_cow()?);
        self.key.clear();
        // A String's write! cannot fail.
        let _ = write!(self.key, "{}:{r}{m}\0{status}", r.len());
        let (nl, nt) = (self.latency_bounds.len(), self.ttft_bounds.len());
        let agg = match self.aggregates.get_mut(self.key.as_str()) {
            Some(agg) => agg,
            None => self
                .aggregates
                .entry(self.key.clone())
                .or_insert_with(|| Aggregate {
                    route: route.clone().unbind(),
                    model: model.clone().unbind(),
                    status,
                    requests: 0,
                    prompt: 0.0,
                    completion: 0.0,
                    usd: 0.0,
                    latency: vec![0.0; nl + 1],
                    ttft: vec![0.0; nt + 1],
                }),
        };
        agg.requests += 1;
        agg.prompt += prompt_tokens;
        agg.completion += completion_tokens;
        agg.usd += cost_usd;
        agg.latency[bucket(&self.latency_bounds, duration_s)] += 1.0;
        agg.latency[nl] += duration_s;
        if let Some(t) = ttft_s {
            agg.ttft[bucket(&self.ttft_bounds, t)] += 1.0;
            agg.ttft[nt] += t;
        }
        if let Some(o) = outcome {
            match self.outcomes.get_mut(o) {
                Some(n) => *n += 1,
                None => {
                    self.outcomes.insert(o.to_owned(), 1);
                }
            }
        }
        Ok(())
    }

    /// The sums since the last drain, and start again: ({(route, model, status):
    /// [requests, prompt tokens, completion tokens, USD, latency buckets + [sum],
    /// time-to-first-token buckets + [sum]]}, {outcome: count}). The sums are taken out
    /// before any Python object is made, so a `record` from a finalizer that the
    /// allocation runs finds the tally free.
    fn drain<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>)> {
        let py = slf.py();
        let (aggregates, outcomes) = {
            let mut me = slf.borrow_mut();
            (
                std::mem::take(&mut me.aggregates),
                std::mem::take(&mut me.outcomes),
            )
        };
        let requests = PyDict::new(py);
        for (_, a) in aggregates {
            let status = a.status.into_pyobject(py)?.into_any().unbind();
            let key = PyTuple::new(py, [a.route.into_any(), a.model.into_any(), status])?;
            let value = PyList::new(
                py,
                [
                    a.requests.into_pyobject(py)?.into_any(),
                    a.prompt.into_pyobject(py)?.into_any(),
                    a.completion.into_pyobject(py)?.into_any(),
                    a.usd.into_pyobject(py)?.into_any(),
                    PyList::new(py, a.latency)?.into_any(),
                    PyList::new(py, a.ttft)?.into_any(),
                ],
            )?;
            requests.set_item(key, value)?;
        }
        let counts = PyDict::new(py);
        for (o, n) in outcomes {
            counts.set_item(o, n)?;
        }
        Ok((requests, counts))
    }

    fn __len__(&self) -> usize {
        self.aggregates.len()
    }
}
