//! RowBinary binding: `encode_rowbinary` over Python rows, with a fast path for
//! exact built-in types that borrows values instead of converting them.
use super::{CoreError, RowBinaryError};
use crate::rowbinary::{self, Input, Int, Type};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType,
};
use std::borrow::Cow;
use std::collections::HashMap;

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

    /// Sets `values[c]` to the value of column `c` in `dict` (null if absent) as a
    /// borrowed pointer: the same values as `dict.get(name)` per column. Returns
    /// false if the pointers cannot be trusted: a key that was not seen before
    /// failed to convert to UTF-8, and raising that error may have run Python
    /// code (a garbage collection) that changed the dict.
    fn values(&mut self, dict: &Bound<'py, PyDict>, values: &mut [*mut ffi::PyObject]) -> bool {
        let py = dict.py();
        values.fill(std::ptr::null_mut());
        let (mut pos, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
        let mut entry = 0;
        let mut trusted = true;
        // SAFETY: `dict` is a live dict; PyDict_Next hands out borrowed references,
        // which stay valid while no Python code runs (see the return value).
        while unsafe { ffi::PyDict_Next(dict.as_ptr(), &mut pos, &mut key, &mut value) } != 0 {
            let column = match self.seen.get(entry) {
                Some((seen, column)) if seen.as_ptr() == key => *column,
                _ => {
                    // SAFETY: `key` is a valid borrowed reference (see above).
                    let key = unsafe { Bound::from_borrowed_ptr(py, key) };
                    let column = match key.cast::<PyString>() {
                        Ok(k) => match k.to_str() {
                            Ok(k) => self.by_name.get(k).copied().unwrap_or(usize::MAX),
                            Err(_) => {
                                trusted = false;
                                usize::MAX
                            }
                        },
                        Err(_) => usize::MAX,
                    };
                    if entry < self.seen.len() {
                        self.seen[entry] = (key, column);
                    } else {
                        self.seen.push((key, column));
                    }
                    column
                }
            };
            if let Some(slot) = values.get_mut(column) {
                *slot = value;
            }
            entry += 1;
        }
        for &(column, first) in &self.repeats {
            values[column] = values[first];
        }
        trusted
    }
}

/// Each column's value in `dict` (`dict.get(name)`), owned: what the generic
/// path encodes, as Python code may run there.
fn held_values<'py>(
    dict: &Bound<'py, PyDict>,
    columns: &[(String, String)],
) -> PyResult<Vec<Option<Bound<'py, PyAny>>>> {
    columns
        .iter()
        .map(|(name, _)| dict.get_item(name))
        .collect()
}

/// A string's UTF-8 if `obj` is exactly `str` (not a subclass) and has UTF-8.
///
/// SAFETY: GIL held; `obj` is live and stays alive while the slice is used.
unsafe fn exact_str<'a>(obj: *mut ffi::PyObject) -> Option<&'a [u8]> {
    if unsafe { ffi::PyUnicode_CheckExact(obj) } == 0 {
        return None;
    }
    let mut len: ffi::Py_ssize_t = 0;
    // SAFETY: `obj` is a live str; the UTF-8 (its own data for ASCII, else a
    // cache kept in it) lives as long as `obj`.
    let data = unsafe { ffi::PyUnicode_AsUTF8AndSize(obj, &mut len) };
    if data.is_null() {
        // A lone surrogate: left to the generic path (same error as before).
        unsafe { ffi::PyErr_Clear() };
        return None;
    }
    // SAFETY: `data` points to `len` bytes (see above).
    Some(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len as usize) })
}

/// The value of an exact `int` (not `bool`) that fits in an i64.
///
/// SAFETY: GIL held; `obj` is live.
unsafe fn exact_i64(obj: *mut ffi::PyObject) -> Option<i64> {
    if unsafe { ffi::PyLong_CheckExact(obj) } == 0 {
        return None;
    }
    let mut overflow = 0;
    // SAFETY: `obj` is an int: no error other than overflow, which sets the flag.
    let v = unsafe { ffi::PyLong_AsLongLongAndOverflow(obj, &mut overflow) };
    (overflow == 0).then_some(v)
}

/// `out.extend_from_slice(b)`, with short slices (most column values) copied
/// inline instead of by a call to `memcpy`.
#[inline(always)]
fn put(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n > 16 {
        out.extend_from_slice(b);
        return;
    }
    out.reserve(n);
    // SAFETY: `out` has room for `n` more bytes (reserved); every read is inside
    // `b` (`n` bytes) and every write inside the reserved room; the first `n`
    // new bytes are all written before the length is set.
    unsafe {
        let (src, dst) = (b.as_ptr(), out.as_mut_ptr().add(out.len()));
        if n >= 8 {
            let (head, tail) = (
                src.cast::<u64>().read_unaligned(),
                src.add(n - 8).cast::<u64>().read_unaligned(),
            );
            dst.cast::<u64>().write_unaligned(head);
            dst.add(n - 8).cast::<u64>().write_unaligned(tail);
        } else if n >= 4 {
            let (head, tail) = (
                src.cast::<u32>().read_unaligned(),
                src.add(n - 4).cast::<u32>().read_unaligned(),
            );
            dst.cast::<u32>().write_unaligned(head);
            dst.add(n - 4).cast::<u32>().write_unaligned(tail);
        } else {
            for k in 0..n {
                *dst.add(k) = *src.add(k);
            }
        }
        out.set_len(out.len() + n);
    }
}

/// Exact-type fast path of `rowbinary::encode` for one value (`obj` null =
/// missing): writes what `encode` writes and returns true, or returns false
/// (possibly after writing part of the value, which the caller truncates) for
/// anything else — other types, subclasses, values `encode` rejects — which the
/// generic path then encodes or rejects with its message. Takes no references
/// and runs no Python code; the only call that can raise is the UTF-8 of a str
/// with a lone surrogate (cleared, returns false).
///
/// SAFETY: GIL held; `obj` is null or live, and kept alive by the caller.
unsafe fn encode_fast(ty: &Type, obj: *mut ffi::PyObject, out: &mut Vec<u8>) -> bool {
    // SAFETY (all blocks below): `obj` and the items of an exact list, tuple or
    // dict are live while no Python code runs, and none does here.
    if obj.is_null() || unsafe { ffi::Py_IsNone(obj) } != 0 {
        return rowbinary::zero(ty, out).is_ok();
    }
    match ty {
        Type::String => {
            let b = match unsafe { exact_str(obj) } {
                Some(b) => b,
                None if unsafe { ffi::PyBytes_CheckExact(obj) } != 0 => {
                    let (mut data, mut len) = (std::ptr::null_mut(), 0);
                    if unsafe { ffi::PyBytes_AsStringAndSize(obj, &mut data, &mut len) } != 0 {
                        unsafe { ffi::PyErr_Clear() };
                        return false;
                    }
                    unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len as usize) }
                }
                None => return false,
            };
            rowbinary::varint(b.len() as u64, out);
            put(out, b);
            true
        }
        Type::Nullable(inner) => {
            out.push(0);
            unsafe { encode_fast(inner, obj, out) }
        }
        Type::Int { bytes, signed } => {
            let Some(i) = (unsafe { exact_i64(obj) }) else {
                return false;
            };
            let i = i128::from(i);
            let (lo, hi) = rowbinary::int_range(*bytes, *signed);
            if i < lo || i > hi {
                return false;
            }
            out.extend_from_slice(&i.to_le_bytes()[..usize::from(*bytes)]);
            true
        }
        Type::Float64 | Type::Float32 => {
            if unsafe { ffi::PyFloat_CheckExact(obj) } == 0 {
                return false;
            }
            let x = unsafe { ffi::PyFloat_AsDouble(obj) };
            if let Type::Float32 = ty {
                let y = x as f32;
                if y.is_infinite() && x.is_finite() {
                    return false;
                }
                out.extend_from_slice(&y.to_le_bytes());
            } else {
                out.extend_from_slice(&x.to_le_bytes());
            }
            true
        }
        Type::Bool => {
            let b = if obj == unsafe { ffi::Py_True() } {
                1
            } else if obj == unsafe { ffi::Py_False() } {
                0
            } else {
                return false;
            };
            out.push(b);
            true
        }
        Type::Enum { wide, labels } => {
            let Some(s) = (unsafe { exact_str(obj) }) else {
                return false;
            };
            let Some(&(_, value)) = labels.iter().find(|(l, _)| l.as_bytes() == s) else {
                return false;
            };
            if *wide {
                out.extend_from_slice(&value.to_le_bytes());
            } else {
                out.push(value as u8);
            }
            true
        }
        Type::DateTime64(_) => match unsafe { exact_i64(obj) } {
            Some(ticks) => {
                out.extend_from_slice(&ticks.to_le_bytes());
                true
            }
            None => false,
        },
        Type::DateTime => match unsafe { exact_i64(obj) }.and_then(|s| u32::try_from(s).ok()) {
            Some(secs) => {
                out.extend_from_slice(&secs.to_le_bytes());
                true
            }
            None => false,
        },
        Type::Date => match unsafe { exact_i64(obj) }.and_then(|d| u16::try_from(d).ok()) {
            Some(days) => {
                out.extend_from_slice(&days.to_le_bytes());
                true
            }
            None => false,
        },
        Type::Array(inner) => {
            let (len, get): (_, unsafe extern "C" fn(_, _) -> _) =
                if unsafe { ffi::PyList_CheckExact(obj) } != 0 {
                    (unsafe { ffi::PyList_Size(obj) }, ffi::PyList_GetItem)
                } else if unsafe { ffi::PyTuple_CheckExact(obj) } != 0 {
                    (unsafe { ffi::PyTuple_Size(obj) }, ffi::PyTuple_GetItem)
                } else {
                    return false;
                };
            rowbinary::varint(len as u64, out);
            // Items are borrowed; the list cannot change while no Python code runs.
            (0..len).all(|k| unsafe { encode_fast(inner, get(obj, k), out) })
        }
        Type::Map(kt, vt) => {
            if unsafe { ffi::PyDict_CheckExact(obj) } == 0 {
                return false;
            }
            rowbinary::varint(unsafe { ffi::PyDict_Size(obj) } as u64, out);
            let (mut pos, mut k, mut v) = (0, std::ptr::null_mut(), std::ptr::null_mut());
            while unsafe { ffi::PyDict_Next(obj, &mut pos, &mut k, &mut v) } != 0 {
                if !unsafe { encode_fast(kt, k, out) && encode_fast(vt, v, out) } {
                    return false;
                }
            }
            true
        }
        Type::FixedString(_) | Type::Uuid => false,
    }
}

/// A column's last value and its encoding, for rows that share value objects
/// (literals, constants, the same parsed config): a hit costs one pointer
/// comparison and a copy. Only immutable exact types are remembered (`str`,
/// `bytes`, `int`, `float`), and the object is owned, so its address cannot be
/// reused by another object while it is remembered.
#[derive(Default)]
struct Memo<'py> {
    obj: Option<Bound<'py, PyAny>>,
    bytes: Vec<u8>,
    hits: u32,
    misses: u32,
}

impl<'py> Memo<'py> {
    fn hit(&mut self, obj: *mut ffi::PyObject) -> bool {
        let hit = self.obj.as_ref().is_some_and(|o| o.as_ptr() == obj);
        self.hits += u32::from(hit);
        hit
    }

    /// Remembers `obj` encoded as `bytes`, unless the column rarely repeats.
    ///
    /// SAFETY: GIL held; `obj` is null or live.
    unsafe fn remember(&mut self, py: Python<'py>, obj: *mut ffi::PyObject, bytes: &[u8]) {
        self.misses = self.misses.saturating_add(1);
        if obj.is_null() || (self.misses > 16 && self.hits < self.misses) {
            return;
        }
        // SAFETY: `obj` is live (caller); exact types only, all immutable.
        let immutable = unsafe {
            ffi::PyUnicode_CheckExact(obj) != 0
                || ffi::PyLong_CheckExact(obj) != 0
                || ffi::PyFloat_CheckExact(obj) != 0
                || ffi::PyBytes_CheckExact(obj) != 0
        };
        if immutable {
            // SAFETY: `obj` is a valid reference (caller); this one is owned.
            self.obj = Some(unsafe { Bound::from_borrowed_ptr(py, obj) });
            self.bytes.clear();
            self.bytes.extend_from_slice(bytes);
        }
    }
}

#[pyfunction]
pub(super) fn encode_rowbinary<'py>(
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
    let mut values: Vec<*mut ffi::PyObject> = vec![std::ptr::null_mut(); columns.len()];
    let cls = Classes {
        datetime: DATETIME.import(py, "datetime", "datetime")?,
        date: DATE.import(py, "datetime", "date")?,
        uuid: UUID.import(py, "uuid", "UUID")?,
    };
    let mut memos: Vec<Memo<'py>> = columns.iter().map(|_| Memo::default()).collect();
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
        // Borrowed values while only the fast path runs; owned ones (looked up
        // again) from the first value that needs the generic path, which may run
        // Python code.
        let mut held = None;
        if !finder.values(dict, &mut values) {
            held = Some(held_values(dict, &columns)?);
        }
        for (c, (ty, (name, _))) in types.iter().zip(&columns).enumerate() {
            let obj = match &held {
                None => values[c],
                Some(h) => h[c].as_ref().map_or(std::ptr::null_mut(), |v| v.as_ptr()),
            };
            let memo = &mut memos[c];
            if memo.hit(obj) {
                put(out, &memo.bytes);
                continue;
            }
            let start = out.len();
            // SAFETY: GIL held; `obj` is null, borrowed from `dict` with no Python
            // code run since, or owned by `held`.
            if unsafe { encode_fast(ty, obj, out) } {
                // SAFETY: as above.
                unsafe { memo.remember(py, obj, &out[start..]) };
                continue;
            }
            out.truncate(start);
            let held = match &mut held {
                Some(h) => h,
                None => held.insert(held_values(dict, &columns)?),
            };
            let value = held[c].clone().map(|obj| PyVal { obj, cls: &cls });
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
