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
/// comparison per entry instead of a hash lookup in a cache-cold table; a
/// different `str` object at a known position is compared by its text.
struct ColumnFinder<'py> {
    /// Each column's name.
    names: Vec<String>,
    /// Column index of each column name (the first, if a name repeats).
    by_name: HashMap<String, usize>,
    /// Columns that repeat an earlier column's name: (column, first column).
    repeats: Vec<(usize, usize)>,
    /// The key object last seen at each entry position and its column
    /// (`usize::MAX`: not a column). Owned, so a pointer cannot be reused.
    seen: Vec<(Bound<'py, PyAny>, usize)>,
    /// Keys replaced in `seen`, kept until `drop_replaced`: dropping an arbitrary
    /// key object may run Python code (`__del__`), which must not happen while
    /// borrowed values are held.
    replaced: Vec<Bound<'py, PyAny>>,
}

/// The UTF-8 of an exact `str`: `Ok(None)` for other objects, `Err` if it has none
/// (a lone surrogate; the error is cleared, but raising it may have run Python
/// code, a garbage collection).
///
/// SAFETY: GIL held; `obj` is live and stays alive while the slice is used.
unsafe fn exact_str_or_err<'a>(obj: *mut ffi::PyObject) -> Result<Option<&'a [u8]>, ()> {
    if unsafe { ffi::PyUnicode_CheckExact(obj) } == 0 {
        return Ok(None);
    }
    let mut len: ffi::Py_ssize_t = 0;
    // SAFETY: `obj` is a live str; the UTF-8 (its own data for ASCII, else a
    // cache kept in it) lives as long as `obj`.
    let data = unsafe { ffi::PyUnicode_AsUTF8AndSize(obj, &mut len) };
    if data.is_null() {
        unsafe { ffi::PyErr_Clear() };
        return Err(());
    }
    // SAFETY: `data` points to `len` bytes (see above).
    Ok(Some(unsafe {
        std::slice::from_raw_parts(data.cast::<u8>(), len as usize)
    }))
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
            names: columns.iter().map(|(name, _)| name.clone()).collect(),
            by_name,
            repeats,
            seen: Vec::with_capacity(columns.len()),
            replaced: Vec::new(),
        }
    }

    /// Sets `values[c]` to the value of column `c` in `dict` (null if absent) as a
    /// borrowed pointer: the same values as `dict.get(name)` per column. Returns
    /// false if the pointers cannot be trusted: a key failed to convert to UTF-8,
    /// and raising that error may have run Python code (a garbage collection)
    /// that changed the dict (or any other dict whose values are held).
    ///
    /// SAFETY: GIL held; `dict` is a live dict (or subclass).
    unsafe fn values(
        &mut self,
        py: Python<'py>,
        dict: *mut ffi::PyObject,
        values: &mut [*mut ffi::PyObject],
    ) -> bool {
        values.fill(std::ptr::null_mut());
        let (mut pos, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
        let mut entry = 0;
        let mut trusted = true;
        // SAFETY: `dict` is a live dict; PyDict_Next hands out borrowed references,
        // which stay valid while no Python code runs (see the return value).
        while unsafe { ffi::PyDict_Next(dict, &mut pos, &mut key, &mut value) } != 0 {
            let column = match self.seen.get(entry) {
                Some((seen, column)) if seen.as_ptr() == key => *column,
                // Same text as the column's name at this position (a key built at
                // run time, or evicted from orjson's key cache): no lookup.
                Some(&(_, column))
                    if column != usize::MAX
                        && unsafe { exact_str_or_err(key) }
                            == Ok(Some(self.names[column].as_bytes())) =>
                {
                    column
                }
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
                        let old = std::mem::replace(&mut self.seen[entry], (key, column));
                        self.replaced.push(old.0);
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

    /// Drops the keys replaced since the last call.
    fn drop_replaced(&mut self) {
        self.replaced.clear();
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

/// A string's UTF-8 if `obj` is exactly `str` (not a subclass) and has UTF-8 (a
/// lone surrogate is left to the generic path, which reports it).
///
/// SAFETY: GIL held; `obj` is live and stays alive while the slice is used.
unsafe fn exact_str<'a>(obj: *mut ffi::PyObject) -> Option<&'a [u8]> {
    unsafe { exact_str_or_err(obj) }.ok().flatten()
}

/// The bytes a String column takes from an exact `str` (its UTF-8) or `bytes`.
///
/// SAFETY: GIL held; `obj` is live and stays alive while the slice is used.
#[inline(always)]
unsafe fn exact_text<'a>(obj: *mut ffi::PyObject) -> Option<&'a [u8]> {
    if let Some(b) = unsafe { exact_str(obj) } {
        return Some(b);
    }
    if unsafe { ffi::PyBytes_CheckExact(obj) } == 0 {
        return None;
    }
    let (mut data, mut len) = (std::ptr::null_mut(), 0);
    // SAFETY: `obj` is a live bytes object; its buffer lives as long as it does.
    if unsafe { ffi::PyBytes_AsStringAndSize(obj, &mut data, &mut len) } != 0 {
        unsafe { ffi::PyErr_Clear() };
        return None;
    }
    Some(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len as usize) })
}

/// A String value from an exact `str` or `bytes`: its length, then its bytes.
///
/// SAFETY: GIL held; `obj` is live.
#[inline(always)]
unsafe fn put_text(obj: *mut ffi::PyObject, out: &mut Vec<u8>) -> bool {
    match unsafe { exact_text(obj) } {
        Some(b) => {
            rowbinary::varint(b.len() as u64, out);
            put(out, b);
            true
        }
        None => false,
    }
}

/// `put_text`, or the empty string for None or null (an item of an Array or Map,
/// as `encode_fast` encodes it).
///
/// SAFETY: GIL held; `obj` is null or live.
#[inline(always)]
unsafe fn put_text_or_none(obj: *mut ffi::PyObject, out: &mut Vec<u8>) -> bool {
    if obj.is_null() || unsafe { ffi::Py_IsNone(obj) } != 0 {
        out.push(0);
        return true;
    }
    unsafe { put_text(obj, out) }
}

/// An `Array(String)` value from an exact list or tuple (`Kind::StrArray`).
///
/// SAFETY: GIL held; `obj` is live.
#[inline(never)]
unsafe fn put_str_array(obj: *mut ffi::PyObject, out: &mut Vec<u8>) -> bool {
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
    (0..len).all(|k| unsafe { put_text_or_none(get(obj, k), out) })
}

/// A `Map(String, String)` value from an exact dict (`Kind::StrMap`).
///
/// SAFETY: GIL held; `obj` is live.
#[inline(never)]
unsafe fn put_str_map(obj: *mut ffi::PyObject, out: &mut Vec<u8>) -> bool {
    if unsafe { ffi::PyDict_CheckExact(obj) } == 0 {
        return false;
    }
    rowbinary::varint(unsafe { ffi::PyDict_Size(obj) } as u64, out);
    let (mut pos, mut k, mut v) = (0, std::ptr::null_mut(), std::ptr::null_mut());
    // Entries are borrowed; the dict cannot change while no Python code runs.
    while unsafe { ffi::PyDict_Next(obj, &mut pos, &mut k, &mut v) } != 0 {
        if !unsafe { put_text_or_none(k, out) && put_text_or_none(v, out) } {
            return false;
        }
    }
    true
}

/// An `Enum8`/`Enum16` value from an exact str that is one of `labels`.
///
/// SAFETY: GIL held; `obj` is live.
#[inline(never)]
unsafe fn put_enum(
    wide: bool,
    labels: &[(Box<[u8]>, i16)],
    obj: *mut ffi::PyObject,
    out: &mut Vec<u8>,
) -> bool {
    let Some(s) = (unsafe { exact_str(obj) }) else {
        return false;
    };
    let Some(&(_, value)) = labels.iter().find(|(l, _)| **l == *s) else {
        return false;
    };
    if wide {
        put_le(out, value as u64, 2);
    } else {
        out.push(value as u8);
    }
    true
}

/// An exact `float` as Float64 (`wide`) or Float32; false for anything else, or a
/// finite value Float32 cannot hold.
///
/// SAFETY: GIL held; `obj` is live.
unsafe fn put_float(obj: *mut ffi::PyObject, wide: bool, out: &mut Vec<u8>) -> bool {
    if unsafe { ffi::PyFloat_CheckExact(obj) } == 0 {
        return false;
    }
    let x = unsafe { ffi::PyFloat_AsDouble(obj) };
    if wide {
        put_le(out, x.to_bits(), 8);
        return true;
    }
    let y = x as f32;
    if y.is_infinite() && x.is_finite() {
        return false;
    }
    put_le(out, u64::from(y.to_bits()), 4);
    true
}

/// `True`/`False` as one byte; false for anything else.
///
/// SAFETY: GIL held; `obj` is live.
unsafe fn put_bool(obj: *mut ffi::PyObject, out: &mut Vec<u8>) -> bool {
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
            let Some(b) = (unsafe { exact_text(obj) }) else {
                return false;
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
        Type::Float64 | Type::Float32 => unsafe {
            put_float(obj, matches!(ty, Type::Float64), out)
        },
        Type::Bool => unsafe { put_bool(obj, out) },
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

/// A column as the row loop sees it: its type, the common scalar types in a flat
/// form (encoded inline, without the recursive `encode_fast` call), its memo.
struct Col<'py> {
    ty: Type,
    /// `Nullable(T)` of a flat `T`: a 0 byte, then `kind`.
    nullable: bool,
    kind: Kind,
    memo: Memo<'py>,
}

enum Kind {
    Str,
    /// `Array(String)` of an exact list or tuple.
    StrArray,
    /// `Map(String, String)` of an exact dict.
    StrMap,
    /// `Enum8`/`Enum16`: each label's UTF-8 and value.
    Enum {
        wide: bool,
        labels: Vec<(Box<[u8]>, i16)>,
    },
    /// `width` little-endian bytes of a value in `lo..=hi` (`hi` capped at
    /// i64::MAX: a larger int is not an `exact_i64` anyway).
    Int {
        width: u8,
        lo: i64,
        hi: i64,
    },
    Float64,
    Float32,
    Bool,
    DateTime64,
    /// Anything else: `encode_fast(ty)`.
    Other,
}

impl<'py> Col<'py> {
    fn new(ty: Type) -> Self {
        let (nullable, inner) = match &ty {
            Type::Nullable(t) => (true, &**t),
            t => (false, t),
        };
        let kind = match inner {
            Type::String => Kind::Str,
            Type::Array(t) if **t == Type::String => Kind::StrArray,
            Type::Map(k, v) if **k == Type::String && **v == Type::String => Kind::StrMap,
            Type::Enum { wide, labels } => Kind::Enum {
                wide: *wide,
                labels: labels
                    .iter()
                    .map(|(l, v)| (l.as_bytes().into(), *v))
                    .collect(),
            },
            &Type::Int { bytes, signed } => {
                let (lo, hi) = rowbinary::int_range(bytes, signed);
                Kind::Int {
                    width: bytes,
                    lo: i64::try_from(lo).unwrap_or(i64::MIN),
                    hi: i64::try_from(hi).unwrap_or(i64::MAX),
                }
            }
            Type::Float64 => Kind::Float64,
            Type::Float32 => Kind::Float32,
            Type::Bool => Kind::Bool,
            Type::DateTime64(_) => Kind::DateTime64,
            _ => Kind::Other,
        };
        let nullable = nullable && !matches!(kind, Kind::Other);
        Self {
            ty,
            nullable,
            kind,
            memo: Memo::default(),
        }
    }

    /// `encode_fast` through the column's memo; on false, nothing is written.
    ///
    /// SAFETY: as `encode_fast`.
    #[inline(always)]
    unsafe fn encode_memo(
        &mut self,
        py: Python<'py>,
        obj: *mut ffi::PyObject,
        out: &mut Vec<u8>,
    ) -> bool {
        let memo = !self.memo.off;
        if memo && self.memo.hit(obj) {
            put(out, &self.memo.bytes);
            return true;
        }
        let start = out.len();
        if !unsafe { self.encode_fast(obj, out) } {
            out.truncate(start);
            return false;
        }
        if memo {
            // SAFETY: as above.
            unsafe { self.memo.remember(py, obj, &out[start..]) };
        }
        true
    }

    /// `encode_fast(&self.ty, obj, out)`, inline for the flat kinds.
    ///
    /// SAFETY: as `encode_fast`.
    #[inline(always)]
    unsafe fn encode_fast(&self, obj: *mut ffi::PyObject, out: &mut Vec<u8>) -> bool {
        // SAFETY (all blocks below): `obj` is null or live (caller).
        if obj.is_null() || unsafe { ffi::Py_IsNone(obj) } != 0 {
            return rowbinary::zero(&self.ty, out).is_ok();
        }
        if self.nullable {
            out.push(0);
        }
        match &self.kind {
            Kind::Other => unsafe { encode_fast(&self.ty, obj, out) },
            Kind::Str => unsafe { put_text(obj, out) },
            Kind::StrArray => unsafe { put_str_array(obj, out) },
            Kind::StrMap => unsafe { put_str_map(obj, out) },
            Kind::Enum { wide, labels } => unsafe { put_enum(*wide, labels, obj, out) },
            &Kind::Int { width, lo, hi } => match unsafe { exact_i64(obj) } {
                Some(i) if (lo..=hi).contains(&i) => {
                    put_le(out, i as u64, width);
                    true
                }
                _ => false,
            },
            Kind::Float64 | Kind::Float32 => unsafe {
                put_float(obj, matches!(self.kind, Kind::Float64), out)
            },
            Kind::Bool => unsafe { put_bool(obj, out) },
            Kind::DateTime64 => match unsafe { exact_i64(obj) } {
                Some(ticks) => {
                    put_le(out, ticks as u64, 8);
                    true
                }
                None => false,
            },
        }
    }
}

/// The first `n` (≤ 8) bytes of `v`, little-endian: one unaligned store, no call.
#[inline(always)]
fn put_le(out: &mut Vec<u8>, v: u64, n: u8) {
    let n = usize::from(n.min(8));
    out.reserve(8);
    // SAFETY: 8 bytes of room are reserved; the first `n` of them are written
    // before the length grows by `n`.
    unsafe {
        let end = out.len();
        out.as_mut_ptr()
            .add(end)
            .cast::<u64>()
            .write_unaligned(v.to_le());
        out.set_len(end + n);
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
    /// The column rarely repeats: not looked at again in this call.
    off: bool,
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
        if self.misses > 16 && self.hits < self.misses {
            self.off = true;
        }
        if obj.is_null() || self.off {
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

/// The state of one `encode_rowbinary` call.
struct Encoder<'a, 'py> {
    py: Python<'py>,
    columns: &'a [(String, String)],
    cols: Vec<Col<'py>>,
    cls: Classes<'py>,
    finder: ColumnFinder<'py>,
    /// The current row's values, borrowed from its dict.
    values: Vec<*mut ffi::PyObject>,
}

impl<'py> Encoder<'_, 'py> {
    /// Encodes row `i` into `out`.
    fn row(&mut self, i: usize, row: &Bound<'py, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
        let py = self.py;
        let dict = row.cast::<PyDict>().map_err(|_| {
            let name = PyVal {
                obj: row.clone(),
                cls: &self.cls,
            }
            .type_name();
            row_error(py, i, "", &format!("expected dict, got {name}"))
        })?;
        // Borrowed values while only the fast path runs; owned ones (looked up
        // again) from the first value that needs the generic path, which may run
        // Python code.
        let n = self.cols.len();
        let mut c = 0;
        // SAFETY: GIL held; `dict` is a live dict.
        if unsafe { self.finder.values(py, dict.as_ptr(), &mut self.values) } {
            for (col, &obj) in self.cols.iter_mut().zip(&self.values) {
                // SAFETY: `obj` is null or borrowed from `dict`, and no Python
                // code has run since.
                if !unsafe { col.encode_memo(py, obj, out) } {
                    break;
                }
                c += 1;
            }
        }
        let held = if c < n {
            Some(held_values(dict, self.columns)?)
        } else {
            None
        };
        for (c, held) in held.iter().flat_map(|h| h.iter().enumerate().skip(c)) {
            let col = &mut self.cols[c];
            let obj = held.as_ref().map_or(std::ptr::null_mut(), |v| v.as_ptr());
            // SAFETY: `obj` is null or owned by `held`.
            if unsafe { col.encode_memo(py, obj, out) } {
                continue;
            }
            let value = held.clone().map(|obj| PyVal {
                obj,
                cls: &self.cls,
            });
            rowbinary::encode(&col.ty, value.as_ref(), out)
                .map_err(|e| row_error(py, i, &self.columns[c].0, &e))?;
        }
        drop(held);
        // Keys replaced while walking this row, now that no value is borrowed.
        self.finder.drop_replaced();
        Ok(())
    }
}

#[pyfunction]
pub(super) fn encode_rowbinary<'py>(
    py: Python<'py>,
    columns: Vec<(String, String)>,
    rows: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let cols = columns
        .iter()
        .map(|(_, t)| rowbinary::parse_type(t).map(Col::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CoreError::new_err)?;
    let mut enc = Encoder {
        py,
        columns: &columns,
        cols,
        cls: Classes {
            datetime: DATETIME.import(py, "datetime", "datetime")?,
            date: DATE.import(py, "datetime", "date")?,
            uuid: UUID.import(py, "uuid", "UUID")?,
        },
        finder: ColumnFinder::new(&columns),
        values: vec![std::ptr::null_mut(); columns.len()],
    };
    let mut out = Vec::with_capacity(256);
    if let Ok(list) = rows.cast::<PyList>() {
        for (i, row) in list.iter().enumerate() {
            enc.row(i, &row, &mut out)?;
            if i == 0 {
                // Size the buffer once from the first row instead of growing it.
                out.reserve(out.len() * list.len() * 9 / 8);
            }
        }
    } else {
        for (i, row) in rows.try_iter()?.enumerate() {
            enc.row(i, &row?, &mut out)?;
        }
    }
    Ok(PyBytes::new(py, &out))
}
