//! ClickHouse RowBinary encoding, generic over the input values (`Input`), so the
//! same encoder serves Python objects (`py.rs`) and the tests below. Pure Rust.

use std::borrow::Cow;

mod types;
pub use types::{parse_type, Type};

/// An integer input: its value, or "does not fit in i128".
pub enum Int {
    Value(i128),
    TooBig,
}

/// What the encoder needs to know about one input value.
pub trait Input: Sized {
    fn is_none(&self) -> bool;
    /// A text string (Python `str`).
    fn as_text(&self) -> Option<Cow<'_, str>>;
    /// A byte string (Python `bytes`).
    fn as_blob(&self) -> Option<Cow<'_, [u8]>>;
    /// A boolean (Python `bool`).
    fn as_bool(&self) -> Option<bool>;
    /// An integer that is not a boolean.
    fn as_int(&self) -> Option<Int>;
    /// A float (not an integer).
    fn as_float(&self) -> Option<f64>;
    fn as_list(&self) -> Option<Vec<Self>>;
    fn as_map(&self) -> Option<Vec<(Self, Self)>>;
    /// A datetime: microseconds since the Unix epoch, UTC (naive = UTC).
    fn as_datetime_micros(&self) -> Option<Result<i128, String>>;
    /// A date that is not a datetime: days since 1970-01-01.
    fn as_date_days(&self) -> Option<i64>;
    /// A UUID object (not a string): its 128-bit value.
    fn as_uuid(&self) -> Option<u128>;
    /// The input's type name, for error messages.
    fn type_name(&self) -> String;
}

/// Appends the RowBinary encoding of `value` (None = missing) as `ty` to `out`.
pub fn encode<V: Input>(ty: &Type, value: Option<&V>, out: &mut Vec<u8>) -> Result<(), String> {
    let value = value.filter(|v| !v.is_none());
    let Some(v) = value else {
        return zero(ty, out);
    };
    match ty {
        Type::Nullable(inner) => {
            out.push(0);
            encode(inner, Some(v), out)
        }
        Type::String => {
            let b = v.as_text().map(|s| match s {
                Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            });
            let b = b
                .or_else(|| v.as_blob())
                .ok_or_else(|| expected("str or bytes", v))?;
            varint(b.len() as u64, out);
            out.extend_from_slice(&b);
            Ok(())
        }
        Type::FixedString(n) => {
            let b = match v.as_text() {
                Some(s) => s.as_bytes().to_vec(),
                None => v
                    .as_blob()
                    .ok_or_else(|| expected("str or bytes", v))?
                    .into_owned(),
            };
            if b.len() > *n {
                return Err(format!("{} bytes do not fit in FixedString({n})", b.len()));
            }
            out.extend_from_slice(&b);
            out.resize(out.len() + n - b.len(), 0);
            Ok(())
        }
        Type::Int { bytes, signed } => {
            let i = int_of(v)?;
            let (lo, hi) = int_range(*bytes, *signed);
            if i < lo || i > hi {
                return Err(format!("{i} is out of range for {}", ty.name()));
            }
            out.extend_from_slice(&i.to_le_bytes()[..usize::from(*bytes)]);
            Ok(())
        }
        Type::Float32 => {
            let x = float_of(v)?;
            let y = x as f32;
            if y.is_infinite() && x.is_finite() {
                return Err(format!("{x} is out of range for Float32"));
            }
            out.extend_from_slice(&y.to_le_bytes());
            Ok(())
        }
        Type::Float64 => {
            out.extend_from_slice(&float_of(v)?.to_le_bytes());
            Ok(())
        }
        Type::Bool => {
            let b = match (v.as_bool(), v.as_int()) {
                (Some(b), _) => b,
                (None, Some(Int::Value(0))) => false,
                (None, Some(Int::Value(1))) => true,
                _ => return Err(expected("bool", v)),
            };
            out.push(u8::from(b));
            Ok(())
        }
        Type::Array(inner) => {
            let items = v.as_list().ok_or_else(|| expected("list or tuple", v))?;
            varint(items.len() as u64, out);
            items.iter().try_for_each(|x| encode(inner, Some(x), out))
        }
        Type::Map(k, val) => {
            let pairs = v.as_map().ok_or_else(|| expected("dict", v))?;
            varint(pairs.len() as u64, out);
            pairs.iter().try_for_each(|(a, b)| {
                encode(k, Some(a), out)?;
                encode(val, Some(b), out)
            })
        }
        Type::Enum { wide, labels } => {
            let label = v
                .as_text()
                .ok_or_else(|| expected("str (an enum label)", v))?;
            let &(_, value) = labels
                .iter()
                .find(|(l, _)| *l == label)
                .ok_or_else(|| format!("unknown label '{label}' for {}", ty.name()))?;
            if *wide {
                out.extend_from_slice(&value.to_le_bytes());
            } else {
                out.push(value as u8);
            }
            Ok(())
        }
        Type::Date => {
            let days = match (v.as_int(), v.as_date_days()) {
                (Some(_), _) => int_of(v)?,
                (None, Some(d)) => i128::from(d),
                (None, None) => match v.as_datetime_micros() {
                    Some(us) => us?.div_euclid(86_400_000_000),
                    None => return Err(expected("int (days) or date", v)),
                },
            };
            let days =
                u16::try_from(days).map_err(|_| format!("{days} is out of range for Date"))?;
            out.extend_from_slice(&days.to_le_bytes());
            Ok(())
        }
        Type::DateTime => {
            let secs = match v.as_int() {
                Some(_) => int_of(v)?,
                None => match v.as_datetime_micros() {
                    Some(us) => us?.div_euclid(1_000_000),
                    None => return Err(expected("int (seconds) or datetime", v)),
                },
            };
            let secs =
                u32::try_from(secs).map_err(|_| format!("{secs} is out of range for DateTime"))?;
            out.extend_from_slice(&secs.to_le_bytes());
            Ok(())
        }
        Type::DateTime64(p) => {
            let ticks = match v.as_int() {
                Some(Int::Value(i)) => i,
                Some(Int::TooBig) => return Err("integer is out of range".into()),
                None => match v.as_datetime_micros() {
                    Some(us) if *p <= 6 => us?.div_euclid(10i128.pow(6 - p)),
                    Some(us) => us? * 10i128.pow(p - 6),
                    None => return Err(expected("int (ticks) or datetime", v)),
                },
            };
            let ticks = i64::try_from(ticks)
                .map_err(|_| format!("{ticks} is out of range for {}", ty.name()))?;
            out.extend_from_slice(&ticks.to_le_bytes());
            Ok(())
        }
        Type::Uuid => {
            let u = match v.as_uuid() {
                Some(u) => u,
                None => {
                    let s = v.as_text().ok_or_else(|| expected("str or uuid.UUID", v))?;
                    parse_uuid(&s).ok_or_else(|| format!("'{s}' is not a UUID"))?
                }
            };
            out.extend_from_slice(&((u >> 64) as u64).to_le_bytes());
            out.extend_from_slice(&(u as u64).to_le_bytes());
            Ok(())
        }
    }
}

fn expected<V: Input>(what: &str, v: &V) -> String {
    format!("expected {what}, got {}", v.type_name())
}

fn int_of<V: Input>(v: &V) -> Result<i128, String> {
    match v.as_int() {
        Some(Int::Value(i)) => Ok(i),
        Some(Int::TooBig) => Err("integer is out of range".into()),
        None => Err(expected("int", v)),
    }
}

fn float_of<V: Input>(v: &V) -> Result<f64, String> {
    if let Some(x) = v.as_float() {
        return Ok(x);
    }
    match v.as_int() {
        Some(Int::Value(i)) => Ok(i as f64),
        Some(Int::TooBig) => Err("integer is out of range for a float".into()),
        None => Err(expected("float or int", v)),
    }
}

/// The smallest and largest value of an integer type.
pub fn int_range(bytes: u8, signed: bool) -> (i128, i128) {
    let bits = u32::from(bytes) * 8;
    if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

/// The value written for a missing key or None.
pub fn zero(ty: &Type, out: &mut Vec<u8>) -> Result<(), String> {
    match ty {
        Type::Nullable(_) => out.push(1),
        Type::String | Type::Array(_) | Type::Map(..) | Type::Bool => out.push(0),
        Type::FixedString(n) => out.resize(out.len() + n, 0),
        Type::Int { bytes, .. } => out.resize(out.len() + usize::from(*bytes), 0),
        Type::Float32 => out.extend_from_slice(&[0; 4]),
        Type::Float64 => out.extend_from_slice(&[0; 8]),
        Type::Enum { .. } | Type::Date | Type::DateTime | Type::DateTime64(_) | Type::Uuid => {
            return Err(format!("a value is required for {}", ty.name()));
        }
    }
    Ok(())
}

/// Unsigned LEB128, as ClickHouse writes lengths.
pub fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` or 32 hex digits, any case.
pub fn parse_uuid(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    let hex: Vec<u8> = match b.len() {
        32 => b.to_vec(),
        36 if [8, 13, 18, 23].iter().all(|&i| b[i] == b'-') => b
            .iter()
            .enumerate()
            .filter(|(i, _)| ![8, 13, 18, 23].contains(i))
            .map(|(_, c)| *c)
            .collect(),
        _ => return None,
    };
    hex.iter().try_fold(0u128, |acc, c| {
        Some(acc << 4 | u128::from(char::from(*c).to_digit(16)?))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;
