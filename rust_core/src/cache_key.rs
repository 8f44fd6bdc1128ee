//! Cache keys: BLAKE2b-128 over a tagged, length-prefixed binary encoding of the
//! canonical request (rule in docs/cache-key.md). Pure Rust, no pyo3.

use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest};
use serde_json::{Map, Value};
use std::fmt;

mod stream;

type Blake2b128 = Blake2b<U16>;

/// Top-level request fields that never change the provider's answer.
pub const IGNORED_FIELDS: [&str; 9] = [
    "user",
    "stream",
    "stream_options",
    "metadata",
    "store",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "watchllm",
];

/// Domain separators: a cache key and a context key never coincide.
const CACHE_DOMAIN: &[u8] = b"watchllm.cache_key.v1";
const CONTEXT_DOMAIN: &[u8] = b"watchllm.context_key.v1";

/// Deepest nesting of arrays/objects accepted (serde_json's own limit is 128).
pub const MAX_DEPTH: usize = 100;

pub(crate) const TAG_NULL: u8 = 0;
pub(crate) const TAG_FALSE: u8 = 1;
pub(crate) const TAG_TRUE: u8 = 2;
pub(crate) const TAG_INT: u8 = 3;
pub(crate) const TAG_FLOAT: u8 = 4;
pub(crate) const TAG_STR: u8 = 5;
pub(crate) const TAG_ARRAY: u8 = 6;
pub(crate) const TAG_OBJECT: u8 = 7;

/// Why a body has no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// Parses a request body that must be a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, KeyError> {
    let value = serde_json::from_slice::<Value>(body).map_err(|e| {
        if e.to_string().starts_with("recursion limit") {
            too_deep()
        } else {
            KeyError(format!("request body is not valid JSON: {e}"))
        }
    })?;
    if depth(&value) > MAX_DEPTH {
        return Err(too_deep());
    }
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(KeyError("request body is not a JSON object".into())),
    }
}

fn too_deep() -> KeyError {
    KeyError(format!(
        "request body is nested deeper than {MAX_DEPTH} levels"
    ))
}

/// Nesting depth: 0 for a scalar, 1 + the deepest child for a container.
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The cache key of a request body in a namespace (single pass, no `Value` tree).
pub fn cache_key(body: &[u8], namespace: &str) -> Result<String, KeyError> {
    let mut enc = Encoder(Vec::with_capacity(body.len() + 64));
    enc.bytes(CACHE_DOMAIN);
    enc.bytes(namespace.as_bytes());
    stream::encode_body(body, &mut enc.0).map_err(|e| {
        let message = e.to_string();
        if message.starts_with(stream::NOT_OBJECT) {
            KeyError(stream::NOT_OBJECT.into())
        } else if message.starts_with(stream::TOO_DEEP) || message.starts_with("recursion limit") {
            too_deep()
        } else {
            KeyError(format!("request body is not valid JSON: {e}"))
        }
    })?;
    Ok(hex(&Blake2b128::digest(&enc.0)))
}

/// The key of the request with its last user message removed.
pub fn context_key(body: &[u8], namespace: &str) -> Result<String, KeyError> {
    let map = parse_object(body)?;
    let skip = last_user_index(&map);
    Ok(key_of(CONTEXT_DOMAIN, namespace, &map, skip))
}

/// Index in `messages` of the last message whose role is "user".
pub fn last_user_index(map: &Map<String, Value>) -> Option<usize> {
    let messages = map.get("messages")?.as_array()?;
    messages
        .iter()
        .rposition(|m| m.get("role").and_then(Value::as_str) == Some("user"))
}

/// The text of the last user message, or None when it is absent or not pure text.
pub fn embed_text(body: &[u8]) -> Result<Option<String>, KeyError> {
    let map = parse_object(body)?;
    let Some(i) = last_user_index(&map) else {
        return Ok(None);
    };
    let message = &map["messages"][i];
    Ok(match message.get("content") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") | Some("input_text") => match part.get("text") {
                        Some(Value::String(t)) => texts.push(t.as_str()),
                        _ => return Ok(None),
                    },
                    _ => return Ok(None),
                }
            }
            Some(texts.join("\n"))
        }
        _ => None,
    })
}

fn key_of(domain: &[u8], namespace: &str, map: &Map<String, Value>, skip: Option<usize>) -> String {
    let mut h = Encoder(Vec::with_capacity(1024));
    h.bytes(domain);
    h.bytes(namespace.as_bytes());
    let kept: Vec<(&String, &Value)> = map
        .iter()
        .filter(|(k, _)| !IGNORED_FIELDS.contains(&k.as_str()))
        .collect();
    h.tag_len(TAG_OBJECT, kept.len());
    for (k, v) in kept {
        h.bytes(k.as_bytes());
        match (skip, v) {
            (Some(i), Value::Array(items)) if k == "messages" => {
                h.tag_len(TAG_ARRAY, items.len() - 1);
                for (j, item) in items.iter().enumerate() {
                    if j != i {
                        h.value(item);
                    }
                }
            }
            _ => h.value(v),
        }
    }
    hex(&Blake2b128::digest(&h.0))
}

/// Writes the canonical encoding into a buffer that is hashed once at the end
/// (many small `update` calls on the hasher cost more than the copy).
struct Encoder(Vec<u8>);

impl Encoder {
    fn tag_len(&mut self, tag: u8, len: usize) {
        self.0.push(tag);
        self.0.extend_from_slice(&(len as u64).to_le_bytes());
    }

    /// Length-prefixed bytes (no tag): namespace, domain, object keys.
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u64).to_le_bytes());
        self.0.extend_from_slice(b);
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.0.push(TAG_NULL),
            Value::Bool(false) => self.0.push(TAG_FALSE),
            Value::Bool(true) => self.0.push(TAG_TRUE),
            Value::Number(n) => self.number(n),
            Value::String(s) => {
                self.0.push(TAG_STR);
                self.bytes(s.as_bytes());
            }
            Value::Array(items) => {
                self.tag_len(TAG_ARRAY, items.len());
                items.iter().for_each(|x| self.value(x));
            }
            // serde_json's Map (without preserve_order) iterates keys in byte order.
            Value::Object(map) => {
                self.tag_len(TAG_OBJECT, map.len());
                for (k, x) in map {
                    self.bytes(k.as_bytes());
                    self.value(x);
                }
            }
        }
    }

    fn number(&mut self, n: &serde_json::Number) {
        if let Some(i) = n.as_i64() {
            return self.int(i);
        }
        // u64 above i64::MAX, or a float: both go through f64 (round to nearest even).
        let f = n.as_f64().unwrap_or(f64::NAN);
        match float_as_int(f) {
            Some(i) => self.int(i),
            None => {
                self.0.push(TAG_FLOAT);
                self.0.extend_from_slice(&f.to_bits().to_le_bytes());
            }
        }
    }

    fn int(&mut self, i: i64) {
        self.0.push(TAG_INT);
        self.0.extend_from_slice(&i.to_le_bytes());
    }
}

/// An integral float in i64 range, as that integer (-0.0 gives 0).
pub fn float_as_int(f: f64) -> Option<i64> {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) {
        Some(f as i64)
    } else {
        None
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> String {
        cache_key(s.as_bytes(), "ns").unwrap()
    }

    #[test]
    fn single_pass_equals_value_tree() {
        let bodies = [
            r#"{}"#,
            r#"{"b":1,"a":2,"b":3,"user":"x"}"#,
            r#"{"z":{"y":[1,2.5,{"k":null,"a":true,"k":false}],"x":"s"},"a":-0.0,"m":18446744073709551615}"#,
            r#"{"stream":true,"metadata":{"a":1},"messages":[{"role":"user","content":"\u00e9\ud83d\ude00"}]}"#,
        ];
        for b in bodies {
            let map = parse_object(b.as_bytes()).unwrap();
            assert_eq!(key(b), key_of(CACHE_DOMAIN, "ns", &map, None), "{b}");
        }
    }

    #[test]
    fn key_is_32_hex() {
        let k = key(r#"{"model":"gpt-4o"}"#);
        assert_eq!(k.len(), 32);
        assert!(k
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn order_whitespace_and_integral_floats_do_not_matter() {
        let a = key(r#"{"model":"m","temperature":1,"x":{"b":2,"a":[1,2.0]}}"#);
        let b = key(
            r#" { "x" : { "a" : [ 1.0 , 2 ] , "b" : 2e0 } , "temperature" : 1.0 , "model" : "m" } "#,
        );
        assert_eq!(a, b);
        assert_eq!(key(r#"{"t":-0.0}"#), key(r#"{"t":0}"#));
    }

    #[test]
    fn ignored_fields_only_at_top_level() {
        let base = key(r#"{"model":"m"}"#);
        assert_eq!(
            base,
            key(r#"{"model":"m","user":"u","stream":true,"watchllm":{"x":1}}"#)
        );
        assert_ne!(
            key(r#"{"model":"m","x":{"user":"u"}}"#),
            key(r#"{"model":"m","x":{}}"#)
        );
    }

    #[test]
    fn sensitive_to_values_types_and_namespace() {
        assert_ne!(key(r#"{"t":1}"#), key(r#"{"t":1.5}"#));
        assert_ne!(key(r#"{"t":1}"#), key(r#"{"t":"1"}"#));
        assert_ne!(key(r#"{"t":[]}"#), key(r#"{"t":{}}"#));
        assert_ne!(key(r#"{"t":null}"#), key(r#"{}"#));
        let body = br#"{"model":"m"}"#;
        assert_ne!(cache_key(body, "a").unwrap(), cache_key(body, "b").unwrap());
    }

    #[test]
    fn rejects_bad_bodies() {
        for bad in ["", "[]", "1", "{", r#"{"a":NaN}"#, r#"{"a":1e400}"#, "{} x"] {
            assert!(cache_key(bad.as_bytes(), "ns").is_err(), "{bad}");
        }
        let deep = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert!(cache_key(deep.as_bytes(), "ns").is_err());
        let ok = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(cache_key(ok.as_bytes(), "ns").is_ok());
    }

    #[test]
    fn context_key_drops_last_user_message() {
        let full = br#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}]}"#;
        let other = br#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"zzz"}]}"#;
        assert_eq!(
            context_key(full, "n").unwrap(),
            context_key(other, "n").unwrap()
        );
        assert_ne!(
            context_key(full, "n").unwrap(),
            cache_key(full, "n").unwrap()
        );
        assert_eq!(embed_text(full).unwrap().as_deref(), Some("c"));
    }

    #[test]
    fn embed_text_of_parts() {
        let parts = br#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#;
        assert_eq!(embed_text(parts).unwrap().as_deref(), Some("a\nb"));
        let image = br#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#;
        assert_eq!(embed_text(image).unwrap(), None);
        assert_eq!(embed_text(br#"{"messages":[]}"#).unwrap(), None);
    }
}
