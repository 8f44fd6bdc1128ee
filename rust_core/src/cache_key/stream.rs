//! Single-pass canonical encoder: serde_json drives this visitor, which writes the
//! canonical encoding (see the parent module) straight into a buffer, sorting each
//! object's members in place, without building a `Value` tree. Must produce the
//! same bytes as `Encoder::value` on the parsed `Value` (tested below).

use super::{
    IGNORED_FIELDS, MAX_DEPTH, TAG_ARRAY, TAG_FALSE, TAG_FLOAT, TAG_INT, TAG_NULL, TAG_OBJECT,
    TAG_STR, TAG_TRUE,
};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

pub(super) const NOT_OBJECT: &str = "request body is not a JSON object";
pub(super) const TOO_DEEP: &str = "nesting limit";

/// Appends the canonical encoding of the JSON object `body` (top-level ignored
/// fields dropped) to `out`.
pub(super) fn encode_body(body: &[u8], out: &mut Vec<u8>) -> serde_json::Result<()> {
    let mut de = serde_json::Deserializer::from_slice(body);
    Enc {
        out,
        depth: 1,
        top: true,
    }
    .deserialize(&mut de)?;
    de.end()
}

struct Enc<'a> {
    out: &'a mut Vec<u8>,
    /// Nesting level of the value about to be read if it is a container.
    depth: usize,
    top: bool,
}

impl Enc<'_> {
    fn scalar<E: de::Error>(self, f: impl FnOnce(&mut Vec<u8>)) -> Result<(), E> {
        if self.top {
            return Err(E::custom(NOT_OBJECT));
        }
        f(self.out);
        Ok(())
    }

    fn child(&mut self) -> Enc<'_> {
        Enc {
            out: self.out,
            depth: self.depth + 1,
            top: false,
        }
    }

    fn open<E: de::Error>(&mut self, tag: u8) -> Result<usize, E> {
        if self.depth > MAX_DEPTH {
            return Err(E::custom(TOO_DEEP));
        }
        self.out.push(tag);
        self.out.extend_from_slice(&[0; 8]);
        Ok(self.out.len() - 8)
    }
}

fn int(out: &mut Vec<u8>, i: i64) {
    out.push(TAG_INT);
    out.extend_from_slice(&i.to_le_bytes());
}

fn float(out: &mut Vec<u8>, f: f64) {
    match super::float_as_int(f) {
        Some(i) => int(out, i),
        None => {
            out.push(TAG_FLOAT);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl<'de> DeserializeSeed<'de> for Enc<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Enc<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar(|o| o.push(TAG_NULL))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(|o| o.push(if v { TAG_TRUE } else { TAG_FALSE }))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(|o| int(o, v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(|o| match i64::try_from(v) {
            Ok(i) => int(o, i),
            Err(_) => float(o, v as f64),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(|o| float(o, v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(|o| {
            o.push(TAG_STR);
            string(o, v);
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        if self.top {
            return Err(de::Error::custom(NOT_OBJECT));
        }
        let count_at = self.open(TAG_ARRAY)?;
        let mut n = 0u64;
        while seq.next_element_seed(self.child())?.is_some() {
            n += 1;
        }
        self.out[count_at..count_at + 8].copy_from_slice(&n.to_le_bytes());
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let count_at = self.open(TAG_OBJECT)?;
        let body_start = self.out.len();
        // (member start, key length, member end) for each member as written.
        let mut members: Vec<(usize, usize, usize)> = Vec::new();
        while let Some(key_len) = map.next_key_seed(Key(self.out))? {
            let start = self.out.len() - key_len - 8;
            map.next_value_seed(self.child())?;
            let key = &self.out[start + 8..start + 8 + key_len];
            if self.top && IGNORED_FIELDS.iter().any(|f| f.as_bytes() == key) {
                self.out.truncate(start);
            } else {
                members.push((start, key_len, self.out.len()));
            }
        }
        let out = &mut *self.out;
        let key = |&(s, l, _): &(usize, usize, usize)| &out[s + 8..s + 8 + l];
        let sorted = members.windows(2).all(|w| key(&w[0]) < key(&w[1]));
        let mut count = members.len();
        if !sorted {
            // Stable sort by key; among duplicates the last one written wins.
            let mut order: Vec<usize> = (0..members.len()).collect();
            order.sort_by(|&a, &b| key(&members[a]).cmp(key(&members[b])));
            let keep: Vec<usize> = (0..order.len())
                .filter(|&i| {
                    i + 1 == order.len() || key(&members[order[i]]) != key(&members[order[i + 1]])
                })
                .map(|i| order[i])
                .collect();
            count = keep.len();
            let old = out[body_start..].to_vec();
            out.truncate(body_start);
            for i in keep {
                let (s, _, e) = members[i];
                out.extend_from_slice(&old[s - body_start..e - body_start]);
            }
        }
        out[count_at..count_at + 8].copy_from_slice(&(count as u64).to_le_bytes());
        Ok(())
    }
}

/// Writes an object key as `u64 length + bytes` and returns its length.
struct Key<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        string(self.0, v);
        Ok(v.len())
    }
}
