//! Usage and generated text of a finished SSE stream (chat completions framing), read
//! after the stream was forwarded. Pure Rust; the twin is `watchllm/_twins/_stream.py`.
//!
//! Framing is the WHATWG subset the gateway's decoder implements (`proxy/sse.py`): CR and
//! CRLF become LF, events are separated by a blank line, an event's `data:` lines (one
//! optional space after the colon) are joined with LF; `[DONE]`, events that are not JSON
//! and JSON that is not an object are skipped. Of each object: `usage` (the last object
//! value wins) and, per choice, `delta.content` and `delta.tool_calls[].function.arguments`
//! in order. A value of the wrong type counts as absent.

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Token counts as a provider reported them: (prompt, completion, cached prompt).
pub type Usage = (i64, i64, i64);

/// What a stream reported: its usage (None when no event carried one) and its text.
pub fn summarize(raw: &[u8]) -> (Option<Usage>, String) {
    let normalized;
    let raw = if raw.contains(&b'\r') {
        normalized = normalize_newlines(raw);
        &normalized[..]
    } else {
        raw
    };
    let mut usage = None;
    let mut text = String::new();
    let mut payload = Vec::new();
    for block in split_blocks(raw) {
        // Invalid UTF-8 anywhere fails the Python parse, so it fails here too, skipped
        // fields included.
        if !block_data(block, &mut payload)
            || payload == b"[DONE]"
            || std::str::from_utf8(&payload).is_err()
        {
            continue;
        }
        let mut de = serde_json::Deserializer::from_slice(&payload);
        let Ok(chunk) = de
            .deserialize_any(ChunkVisitor)
            .and_then(|c| de.end().map(|_| c))
        else {
            continue;
        };
        if let Some(Value::Object(u)) = &chunk.usage {
            usage = Some(usage_of(u));
        }
        if let Some(Value::Array(choices)) = &chunk.choices {
            append_text(choices, &mut text);
        }
    }
    (usage, text)
}

fn normalize_newlines(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\r' {
            out.push(b'\n');
            if raw.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
        } else {
            out.push(raw[i]);
        }
        i += 1;
    }
    out
}

/// The two fields of a chunk object that matter; the others are skipped without being
/// built (a chunk's id, model, fingerprint... cost nothing). A duplicate key keeps its
/// last value, as a JSON object parsed into a map does; anything but an object is `Err`.
struct Chunk {
    usage: Option<Value>,
    choices: Option<Value>,
}

struct ChunkVisitor;

impl<'de> Visitor<'de> for ChunkVisitor {
    type Value = Chunk;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Chunk, A::Error> {
        let mut chunk = Chunk {
            usage: None,
            choices: None,
        };
        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::Usage => chunk.usage = Some(map.next_value()?),
                Field::Choices => chunk.choices = Some(map.next_value()?),
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(chunk)
    }
}

/// A chunk's key, matched without allocating (escaped keys included).
enum Field {
    Usage,
    Choices,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "usage" => Field::Usage,
                    "choices" => Field::Choices,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_str(FieldVisitor)
    }
}

/// The pieces between blank lines (`\n\n`), the last one included.
fn split_blocks(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(raw);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.windows(2).position(|w| w == b"\n\n") {
            Some(at) => {
                rest = Some(&current[at + 2..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// The joined `data:` lines of one event into `out`; false when it has none.
fn block_data(block: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut any = false;
    for line in block.split(|&b| b == b'\n') {
        if let Some(value) = line.strip_prefix(b"data:") {
            if any {
                out.push(b'\n');
            }
            out.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
            any = true;
        }
    }
    any
}

/// A token count: an integer (or the integer part of a number), at least 0; anything
/// else is 0.
fn count(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                i.max(0)
            } else if n.as_u64().is_some() {
                i64::MAX
            } else {
                // `as` saturates, and the integer part is what Python's int() keeps.
                (n.as_f64().unwrap_or(0.0) as i64).max(0)
            }
        }
        _ => 0,
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// OpenAI's names first, then the Responses/Anthropic-style ones.
fn usage_of(u: &Map<String, Value>) -> Usage {
    let either = |a: &str, b: &str| u.get(a).or_else(|| u.get(b));
    let details = [
        u.get("prompt_tokens_details"),
        u.get("input_tokens_details"),
    ]
    .into_iter()
    .flatten()
    .find(|d| truthy(d));
    let cached = match details {
        Some(Value::Object(d)) => count(d.get("cached_tokens")),
        _ => 0,
    };
    (
        count(either("prompt_tokens", "input_tokens")),
        count(either("completion_tokens", "output_tokens")),
        cached,
    )
}

fn append_text(choices: &[Value], text: &mut String) {
    for choice in choices {
        let Some(Value::Object(delta)) = choice.get("delta") else {
            continue;
        };
        if let Some(Value::String(content)) = delta.get("content") {
            text.push_str(content);
        }
        let Some(Value::Array(calls)) = delta.get("tool_calls") else {
            continue;
        };
        for call in calls {
            if let Some(Value::String(args)) = call.get("function").and_then(|f| f.get("arguments"))
            {
                text.push_str(args);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_stream_with_usage() {
        let raw = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\
\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\ndata: [DONE]\n\n";
        assert_eq!(summarize(raw), (Some((9, 2, 4)), "Hello".to_string()));
    }

    #[test]
    fn framing_and_odd_values() {
        // CRLF framing, a data line without the space, a multi-line data field, a
        // non-JSON event, a tool call, wrong types counted as absent.
        let raw = b"data:{\"choices\":[{\"delta\":{\"content\":1}}]}\r\n\r\n\
data: {\"choices\":[{\"delta\":{\"tool_calls\":\r\ndata: [{\"function\":{\"arguments\":\"{}\"}}]}}]}\r\n\r\n\
data: nope\r\n\r\ndata: {\"usage\":{\"input_tokens\":-3,\"output_tokens\":2.9}}";
        assert_eq!(summarize(raw), (Some((0, 2, 0)), "{}".to_string()));
        assert_eq!(summarize(b""), (None, String::new()));
    }
}
