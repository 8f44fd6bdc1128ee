//! Python bindings: every `#[pyfunction]`/`#[pyclass]` lives here (RowBinary's in
//! `py/rowbinary.rs`). The heavy calls
//! release the GIL; every error becomes `CoreError` (or `RowBinaryError`).
use crate::cache_key as keys;
use crate::{similarity, stream, tokens};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use std::borrow::Cow;

mod held;
mod rates;
mod rowbinary;
mod tally;

pyo3::create_exception!(
    _core,
    CoreError,
    PyValueError,
    "Invalid input to a core function."
);
pyo3::create_exception!(
    _core,
    RowBinaryError,
    CoreError,
    "A row cannot be encoded (.row, .column)."
);

/// Work on inputs at least this large runs with the GIL released.
const DETACH_BYTES: usize = 16 * 1024;

/// `run()`, with the GIL released when the input is large enough to be worth it: for a
/// typical request's few microseconds of work a release costs more than it frees.
fn detach_if<T: Send>(py: Python<'_>, input_len: usize, run: impl FnOnce() -> T + Send) -> T {
    if input_len >= DETACH_BYTES {
        py.detach(run)
    } else {
        run()
    }
}

fn core_err(e: impl std::fmt::Display) -> PyErr {
    CoreError::new_err(e.to_string())
}

#[pyfunction]
fn cache_key(py: Python<'_>, body: &[u8], namespace: &str) -> PyResult<String> {
    detach_if(py, body.len(), || keys::cache_key(body, namespace)).map_err(core_err)
}

#[pyfunction]
fn context_key(py: Python<'_>, body: &[u8], namespace: &str) -> PyResult<String> {
    detach_if(py, body.len(), || keys::context_key(body, namespace)).map_err(core_err)
}

#[pyfunction]
fn embed_text(body: &[u8]) -> PyResult<Option<String>> {
    keys::embed_text(body).map_err(core_err)
}

fn text_arg<'a>(text: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, str>> {
    text.to_cow()
        .map_err(|_| CoreError::new_err("text is not valid Unicode (lone surrogate)"))
}

#[pyfunction]
fn count_tokens(py: Python<'_>, text: &Bound<'_, PyString>, encoding: &str) -> PyResult<usize> {
    let bpe = tokens::bpe(encoding).map_err(core_err)?;
    let text = text_arg(text)?;
    // Counting costs more per byte than hashing: a quarter of the size is worth a release.
    detach_if(py, text.len() * 4, || bpe.count(&text)).map_err(core_err)
}

#[pyfunction]
fn encoding_for_model(model: &str) -> &'static str {
    tokens::encoding_for_model(model)
}

/// Prompt tokens of a chat request: its body, or the dict orjson parsed it into (the
/// same count without parsing again; see `tokens/chat.rs`).
#[pyfunction]
fn count_chat_tokens(py: Python<'_>, body: &Bound<'_, PyAny>) -> PyResult<usize> {
    if let Ok(bytes) = body.cast::<PyBytes>() {
        let body = bytes.as_bytes();
        return detach_if(py, body.len(), || tokens::count_chat_tokens(body)).map_err(core_err);
    }
    if body.cast::<PyDict>().is_ok() {
        return tokens::chat::count_chat(body).map_err(core_err);
    }
    Err(PyTypeError::new_err(
        "count_chat_tokens takes the body (bytes) or its parsed dict",
    ))
}

/// A Python object as orjson makes it of JSON, for the chat formula.
impl tokens::chat::Json for Bound<'_, PyAny> {
    fn text(&self) -> Option<Cow<'_, str>> {
        self.cast::<PyString>().ok()?.to_cow().ok()
    }
    fn member(&self, key: &str) -> Option<Self> {
        let dict = self.cast::<PyDict>().ok()?;
        let py = self.py();
        // Interned: a new str per lookup (made and hashed) costs more than the lookup.
        let key = match key {
            "model" => intern!(py, "model"),
            "messages" => intern!(py, "messages"),
            "text" => intern!(py, "text"),
            "prompt" => intern!(py, "prompt"),
            "input" => intern!(py, "input"),
            "tools" => intern!(py, "tools"),
            "functions" => intern!(py, "functions"),
            other => return dict.get_item(other).ok().flatten(),
        };
        dict.get_item(key).ok().flatten()
    }
    fn is_object(&self) -> bool {
        self.cast::<PyDict>().is_ok()
    }
    fn each_item(&self, f: &mut dyn FnMut(Self)) -> bool {
        let Ok(list) = self.cast::<PyList>() else {
            return false;
        };
        list.iter().for_each(f);
        true
    }
    fn each_entry(&self, f: &mut dyn FnMut(&str, Self)) -> bool {
        let Ok(dict) = self.cast::<PyDict>() else {
            return false;
        };
        for (key, value) in dict.iter() {
            let key = key.cast::<PyString>().ok().and_then(|k| k.to_cow().ok());
            f(key.as_deref().unwrap_or(""), value);
        }
        true
    }
}

/// (usage or None, text) of a finished SSE stream (see `stream.rs`).
#[pyfunction]
fn stream_usage(py: Python<'_>, raw: &[u8]) -> (Option<stream::Usage>, String) {
    detach_if(py, raw.len(), || stream::summarize(raw))
}

/// zlib's CRC-32 (`zlib.crc32(data, value)`: the same checksum), with the CPU's carry-less
/// multiply where there is one: the event spool checksums every record and every insert.
/// Narrower than zlib's: `data` is bytes, `value` a CRC (0 to 2^32 - 1).
#[pyfunction]
#[pyo3(signature = (data, value=0))]
fn crc32(py: Python<'_>, data: &[u8], value: u32) -> u32 {
    detach_if(py, data.len(), || {
        let mut hasher = crc32fast::Hasher::new_with_initial(value);
        hasher.update(data);
        hasher.finalize()
    })
}

/// Cosine top-k index (see `similarity.rs`).
#[pyclass(frozen, module = "watchllm._core")]
struct VectorIndex {
    inner: similarity::VectorIndex,
}

fn vector_arg(v: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    let py = v.py();
    if let Ok(buf) = PyBuffer::<f32>::get(v) {
        if buf.dimensions() == 1 {
            return Ok(buf.to_vec(py)?.into_iter().map(f64::from).collect());
        }
    } else if let Ok(buf) = PyBuffer::<f64>::get(v) {
        if buf.dimensions() == 1 {
            return buf.to_vec(py);
        }
    } else if let Ok(list) = v.extract::<Vec<f64>>() {
        return Ok(list);
    }
    Err(CoreError::new_err(
        "vector must be a 1-D sequence or buffer of floats",
    ))
}

#[pymethods]
impl VectorIndex {
    #[new]
    fn new(dim: usize) -> PyResult<Self> {
        Ok(Self {
            inner: similarity::VectorIndex::new(dim).map_err(core_err)?,
        })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn add(&self, namespace: &str, id: &str, vector: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner
            .add(namespace, id, &vector_arg(vector)?)
            .map_err(core_err)
    }

    fn remove(&self, namespace: &str, id: &str) -> bool {
        self.inner.remove(namespace, id)
    }

    fn search(
        &self,
        py: Python<'_>,
        namespace: &str,
        query: &Bound<'_, PyAny>,
        k: i64,
        threshold: f64,
    ) -> PyResult<Vec<(String, f64)>> {
        let q = vector_arg(query)?;
        let k = usize::try_from(k).unwrap_or(0);
        py.detach(|| self.inner.search(namespace, &q, k, threshold))
            .map_err(core_err)
    }

    fn namespace_len(&self, namespace: &str) -> usize {
        self.inner.namespace_len(namespace)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", crate::VERSION)?;
    m.add("CoreError", py.get_type::<CoreError>())?;
    m.add("RowBinaryError", py.get_type::<RowBinaryError>())?;
    m.add_class::<VectorIndex>()?;
    m.add_class::<rates::RatePlan>()?;
    m.add_class::<rates::RateTable>()?;
    m.add_class::<rates::RateGrant>()?;
    m.add_class::<held::HeldRates>()?;
    m.add_class::<held::HeldSlot>()?;
    m.add_class::<tally::RequestTally>()?;
    m.add_function(wrap_pyfunction!(cache_key, m)?)?;
    m.add_function(wrap_pyfunction!(context_key, m)?)?;
    m.add_function(wrap_pyfunction!(embed_text, m)?)?;
    m.add_function(wrap_pyfunction!(count_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(encoding_for_model, m)?)?;
    m.add_function(wrap_pyfunction!(count_chat_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(stream_usage, m)?)?;
    m.add_function(wrap_pyfunction!(crc32, m)?)?;
    m.add_function(wrap_pyfunction!(rowbinary::encode_rowbinary, m)?)?;
    Ok(())
}
