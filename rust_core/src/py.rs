//! Python bindings: every `#[pyfunction]`/`#[pyclass]` lives here. The heavy calls
//! release the GIL; every error becomes `CoreError` (or `RowBinaryError`).
use crate::cache_key as keys;
use crate::rowbinary::{self, Input, Int};
use crate::{similarity, tokens};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType,
};
use std::borrow::Cow;
use std::collections::HashMap;

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

fn core_err(e: impl std::fmt::Display) -> PyErr {
    CoreError::new_err(e.to_string())
}

#[pyfunction]
fn cache_key(py: Python<'_>, body: &[u8], namespace: &str) -> PyResult<String> {
    let run = || keys::cache_key(body, namespace);
    if body.len() >= DETACH_BYTES {
        py.detach(run)
    } else {
        run()
    }
    .map_err(core_err)
}

#[pyfunction]
fn context_key(py: Python<'_>, body: &[u8], namespace: &str) -> PyResult<String> {
    let run = || keys::context_key(body, namespace);
    if body.len() >= DETACH_BYTES {
        py.detach(run)
    } else {
        run()
    }
    .map_err(core_err)
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
    let run = || {
        if text.is_empty() {
            0
        } else {
            bpe.encode_ordinary(&text).len()
        }
    };
    Ok(if text.len() >= DETACH_BYTES / 4 {
        py.detach(run)
    } else {
        run()
    })
}

#[pyfunction]
fn encoding_for_model(model: &str) -> &'static str {
    tokens::encoding_for_model(model)
}

#[pyfunction]
fn count_chat_tokens(py: Python<'_>, body: &[u8]) -> PyResult<usize> {
    py.detach(|| tokens::count_chat_tokens(body))
        .map_err(core_err)
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

/// Classes the RowBinary encoder recognises, imported once.
struct Classes<'py> {
    datetime: &'py Bound<'py, PyType>,
    date: &'py Bound<'py, PyType>,
    uuid: &'py Bound<'py, PyType>,
}

static DATETIME: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DATE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static UUID: PyOnceLock<Py<PyType>> = PyOnceLock::new();

struct PyVal<'a, 'py> {
    obj: Bound<'py, PyAny>,
    cls: &'a Classes<'py>,
}

impl<'a, 'py> PyVal<'a, 'py> {
    fn wrap(&self, obj: Bound<'py, PyAny>) -> Self {
        Self { obj, cls: self.cls }
    }

    fn attr_i128(&self, obj: &Bound<'py, PyAny>, name: &str) -> Result<i128, String> {
        obj.getattr(name)
            .and_then(|v| v.extract::<i64>())
            .map(i128::from)
            .map_err(|e| e.to_string())
    }
}

impl Input for PyVal<'_, '_> {
    fn is_none(&self) -> bool {
        self.obj.is_none()
    }
    fn as_text(&self) -> Option<Cow<'_, str>> {
        let s = self.obj.cast::<PyString>().ok()?;
        let mut len: pyo3::ffi::Py_ssize_t = 0;
        // SAFETY: `s` is a live str. The UTF-8 it returns (the str's own data for
        // ASCII, else a cache kept in the str) lives as long as `s`, which
        // `self.obj` keeps alive while the borrow of `self` lasts.
        let data = unsafe { pyo3::ffi::PyUnicode_AsUTF8AndSize(s.as_ptr(), &mut len) };
        if data.is_null() {
            // A lone surrogate has no UTF-8: not usable as text (as before).
            drop(PyErr::take(self.obj.py()));
            return None;
        }
        // SAFETY: `data` points to `len` bytes of valid UTF-8 (see above).
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len as usize) };
        // SAFETY: as above.
        Some(Cow::Borrowed(unsafe {
            std::str::from_utf8_unchecked(bytes)
        }))
    }
    fn as_blob(&self) -> Option<Cow<'_, [u8]>> {
        if let Ok(b) = self.obj.cast::<PyBytes>() {
            Some(Cow::Borrowed(b.as_bytes()))
        } else {
            self.obj
                .cast::<PyByteArray>()
                .ok()
                .map(|b| Cow::Owned(b.to_vec()))
        }
    }
    fn as_bool(&self) -> Option<bool> {
        self.obj.cast::<PyBool>().ok().map(|b| b.is_true())
    }
    fn as_int(&self) -> Option<Int> {
        if self.obj.is_instance_of::<PyBool>() || !self.obj.is_instance_of::<PyInt>() {
            return None;
        }
        Some(match self.obj.extract::<i64>() {
            Ok(i) => Int::Value(i128::from(i)),
            Err(_) => self
                .obj
                .extract::<u64>()
                .map_or(Int::TooBig, |u| Int::Value(i128::from(u))),
        })
    }
    fn as_float(&self) -> Option<f64> {
        self.obj.cast::<PyFloat>().ok().map(|f| f.value())
    }
    fn as_list(&self) -> Option<Vec<Self>> {
        if let Ok(l) = self.obj.cast::<PyList>() {
            Some(l.iter().map(|x| self.wrap(x)).collect())
        } else {
            let t = self.obj.cast::<PyTuple>().ok()?;
            Some(t.iter().map(|x| self.wrap(x)).collect())
        }
    }
    fn as_map(&self) -> Option<Vec<(Self, Self)>> {
        let d = self.obj.cast::<PyDict>().ok()?;
        Some(
            d.iter()
                .map(|(k, v)| (self.wrap(k), self.wrap(v)))
                .collect(),
        )
    }
    fn as_datetime_micros(&self) -> Option<Result<i128, String>> {
        if !self.obj.is_instance(self.cls.datetime).unwrap_or(false) {
            return None;
        }
        let o = &self.obj;
        let get = |name: &str| self.attr_i128(o, name);
        Some((|| {
            let days = rowbinary::days_from_civil(
                get("year")? as i64,
                get("month")? as i64,
                get("day")? as i64,
            );
            let secs = i128::from(days) * 86_400
                + get("hour")? * 3600
                + get("minute")? * 60
                + get("second")?;
            let mut us = secs * 1_000_000 + get("microsecond")?;
            let offset = o.call_method0("utcoffset").map_err(|e| e.to_string())?;
            if !offset.is_none() {
                let off = |name: &str| self.attr_i128(&offset, name);
                us -= (off("days")? * 86_400 + off("seconds")?) * 1_000_000 + off("microseconds")?;
            }
            Ok(us)
        })())
    }
    fn as_date_days(&self) -> Option<i64> {
        if !self.obj.is_instance(self.cls.date).unwrap_or(false)
            || self.obj.is_instance(self.cls.datetime).unwrap_or(false)
        {
            return None;
        }
        let get = |name: &str| self.attr_i128(&self.obj, name).ok().map(|v| v as i64);
        Some(rowbinary::days_from_civil(
            get("year")?,
            get("month")?,
            get("day")?,
        ))
    }
    fn as_uuid(&self) -> Option<u128> {
        if !self.obj.is_instance(self.cls.uuid).unwrap_or(false) {
            return None;
        }
        self.obj.getattr("int").ok()?.extract::<u128>().ok()
    }
    fn type_name(&self) -> String {
        self.obj
            .get_type()
            .name()
            .map_or_else(|_| "?".into(), |n| n.to_string())
    }
}

fn row_error(py: Python<'_>, row: usize, column: &str, reason: &str) -> PyErr {
    let message = if column.is_empty() {
        format!("row {row}: {reason}")
    } else {
        format!("row {row}, column '{column}': {reason}")
    };
    let err = RowBinaryError::new_err(message);
    let value = err.value(py);
    if let Err(e) = value
        .setattr("row", row)
        .and_then(|()| value.setattr("column", column))
    {
        return e;
    }
    err
}

/// Finds the columns' values in a row dict by walking its entries in insertion
/// order. Rows built the same way (a literal, a template, the same JSON shape)
/// hold the same keys at the same positions, and usually the same key objects
/// (interned literals, orjson's key cache), so the common case is one pointer
/// comparison per entry instead of a hash lookup in a cache-cold table.
struct ColumnFinder<'py> {
    /// Column index of each column name (the first, if a name repeats).
    by_name: HashMap<String, usize>,
    /// Columns that repeat an earlier column's name: (column, first column).
    repeats: Vec<(usize, usize)>,
    /// The key object last seen at each entry position and its column
    /// (`usize::MAX`: not a column). Owned, so a pointer cannot be reused.
    seen: Vec<(Bound<'py, PyAny>, usize)>,
}

impl<'py> ColumnFinder<'py> {
    fn new(columns: &[(String, String)]) -> Self {
        let mut by_name = HashMap::with_capacity(columns.len());
        let mut repeats = Vec::new();
        for (i, (name, _)) in columns.iter().enumerate() {
            if let Some(&first) = by_name.get(name) {
                repeats.push((i, first));
            } else {
                by_name.insert(name.clone(), i);
            }
        }
        Self {
            by_name,
            repeats,
            seen: Vec::with_capacity(columns.len()),
        }
    }

    /// Sets `values[c]` to the value of column `c` in `dict` (None if absent);
    /// the same values as `dict.get(name)` per column.
    fn values(&mut self, dict: &Bound<'py, PyDict>, values: &mut [Option<Bound<'py, PyAny>>]) {
        let py = dict.py();
        values.iter_mut().for_each(|v| *v = None);
        let (mut pos, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
        let mut entry = 0;
        // SAFETY: `dict` is a live dict; PyDict_Next hands out borrowed references,
        // which are turned into owned ones before anything else can run.
        while unsafe { pyo3::ffi::PyDict_Next(dict.as_ptr(), &mut pos, &mut key, &mut value) } != 0
        {
            let column = match self.seen.get(entry) {
                Some((seen, column)) if seen.as_ptr() == key => *column,
                _ => {
                    // SAFETY: `key` is a valid borrowed reference (see above).
                    let key = unsafe { Bound::from_borrowed_ptr(py, key) };
                    let column = key
                        .cast::<PyString>()
                        .ok()
                        .and_then(|k| k.to_str().ok().and_then(|k| self.by_name.get(k)))
                        .copied()
                        .unwrap_or(usize::MAX);
                    if entry < self.seen.len() {
                        self.seen[entry] = (key, column);
                    } else {
                        self.seen.push((key, column));
                    }
                    column
                }
            };
            if let Some(slot) = values.get_mut(column) {
                // SAFETY: `value` is a valid borrowed reference (see above).
                *slot = Some(unsafe { Bound::from_borrowed_ptr(py, value) });
            }
            entry += 1;
        }
        for &(column, first) in &self.repeats {
            values[column] = values[first].clone();
        }
    }
}

#[pyfunction]
fn encode_rowbinary<'py>(
    py: Python<'py>,
    columns: Vec<(String, String)>,
    rows: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let types = columns
        .iter()
        .map(|(_, t)| rowbinary::parse_type(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CoreError::new_err)?;
    let mut finder = ColumnFinder::new(&columns);
    let mut values: Vec<Option<Bound<'py, PyAny>>> = vec![None; columns.len()];
    let cls = Classes {
        datetime: DATETIME.import(py, "datetime", "datetime")?,
        date: DATE.import(py, "datetime", "date")?,
        uuid: UUID.import(py, "uuid", "UUID")?,
    };
    let mut out = Vec::with_capacity(256);
    let mut encode_row = |i: usize, row: Bound<'py, PyAny>, out: &mut Vec<u8>| -> PyResult<()> {
        let dict = row.cast::<PyDict>().map_err(|_| {
            let name = PyVal {
                obj: row.clone(),
                cls: &cls,
            }
            .type_name();
            row_error(py, i, "", &format!("expected dict, got {name}"))
        })?;
        finder.values(dict, &mut values);
        for ((value, ty), (name, _)) in values.iter_mut().zip(&types).zip(&columns) {
            let value = value.take().map(|obj| PyVal { obj, cls: &cls });
            rowbinary::encode(ty, value.as_ref(), out).map_err(|e| row_error(py, i, name, &e))?;
        }
        Ok(())
    };
    if let Ok(list) = rows.cast::<PyList>() {
        for (i, row) in list.iter().enumerate() {
            encode_row(i, row, &mut out)?;
            if i == 0 {
                // Size the buffer once from the first row instead of growing it.
                out.reserve(out.len() * list.len() * 9 / 8);
            }
        }
    } else {
        for (i, row) in rows.try_iter()?.enumerate() {
            encode_row(i, row?, &mut out)?;
        }
    }
    Ok(PyBytes::new(py, &out))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", crate::VERSION)?;
    m.add("CoreError", py.get_type::<CoreError>())?;
    m.add("RowBinaryError", py.get_type::<RowBinaryError>())?;
    m.add_class::<VectorIndex>()?;
    m.add_function(wrap_pyfunction!(cache_key, m)?)?;
    m.add_function(wrap_pyfunction!(context_key, m)?)?;
    m.add_function(wrap_pyfunction!(embed_text, m)?)?;
    m.add_function(wrap_pyfunction!(count_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(encoding_for_model, m)?)?;
    m.add_function(wrap_pyfunction!(count_chat_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(encode_rowbinary, m)?)?;
    Ok(())
}
