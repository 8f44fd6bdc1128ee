//! Usage and generated text of a finished SSE stream (chat completions framing), read
//! after the stream was forwarded. Pure Rust; the twin is `watchllm/_twins/_stream.py`.
//!
//! Framing is the WHATWG subset the gateway's decoder implements (`proxy/sse.py`): CR and
//! CRLF become LF, events are separated by a blank line, an event's `data:` lines (one
//! optional space after the colon) are joined with LF; `[DONE]`, events that are not JSON
//! and JSON that is not an object are skipped. Of each object: `usage` (the last object
//! value wins) and, per choice, `delta.content` and `delta.tool_calls[].function.arguments`
//! in order. A value of the wrong type counts as absent. An event whose arrays and objects
//! nest deeper than 127 is skipped (`sse.MAX_DEPTH`: serde_json's recursion limit).

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// Token counts as a provider reported them: (prompt, completion, cached prompt).
pub type Usage = (i64, i64, i64);

/// What a stream reported: its usage (None when no event carried one) and its text.
///
/// Each event is parsed once, straight into the text: the fields that matter are read
/// where they are, everything else is checked (as strictly as a full parse: UTF-8,
/// escapes, numbers that overflow a double) without being built.
pub fn summarize(raw: &[u8]) -> (Option<Usage>, String) {
    let normalized;
    let raw = if memchr::memchr(b'\r', raw).is_some() {
        normalized = normalize_newlines(raw);
        &normalized[..]
    } else {
        raw
    };
    let mut usage = None;
    let mut text = String::new();
    let mut joined = Vec::new();
    for block in split_blocks(raw) {
        let Some(payload) = block_data(block, &mut joined) else {
            continue;
        };
        // Invalid UTF-8 anywhere fails the Python parse, so it fails here too. Checked
        // once per event: the string reader then skips the per-string check.
        let Ok(payload) = std::str::from_utf8(payload) else {
            continue;
        };
        if payload == "[DONE]" {
            continue;
        }
        let start = text.len();
        let mut de = serde_json::Deserializer::from_str(payload);
        match de
            .deserialize_any(ChunkSeed(&mut text))
            .and_then(|u| de.end().map(|_| u))
        {
            Ok(Some(u)) => usage = Some(u),
            Ok(None) => {}
            Err(_) => text.truncate(start), // not JSON, or not an object: skipped whole
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

/// The pieces between blank lines (`\n\n`), the last one included.
fn split_blocks(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let finder = memchr::memmem::Finder::new(b"\n\n");
    let mut rest = Some(raw);
    std::iter::from_fn(move || {
        let current = rest?;
        match finder.find(current) {
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

/// The joined `data:` lines of one event (borrowed when it has just one line); None when
/// it has none.
fn block_data<'a>(block: &'a [u8], joined: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    if memchr::memchr(b'\n', block).is_none() {
        let value = block.strip_prefix(b"data:")?;
        return Some(value.strip_prefix(b" ").unwrap_or(value));
    }
    joined.clear();
    let mut any = false;
    for line in block.split(|&b| b == b'\n') {
        if let Some(value) = line.strip_prefix(b"data:") {
            if any {
                joined.push(b'\n');
            }
            joined.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
            any = true;
        }
    }
    any.then_some(&joined[..])
}

// --- One event, parsed into the text ------------------------------------------------
// JSON objects keep the last of duplicate keys (as Python's dict does), so a field's text
// is written where the field is read and rolled back when the same key comes again.

/// Which of `names` a key is (`names.len()` for any other key); never allocates.
struct KeyOf<'n>(&'n [&'n str]);

impl<'de> DeserializeSeed<'de> for KeyOf<'_> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyOf<'_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        Ok(self.0.iter().position(|n| *n == v).unwrap_or(self.0.len()))
    }
}

/// Any JSON value, checked and dropped.
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        // deserialize_any (not deserialize_ignored_any): numbers are converted, so one
        // that overflows a double is an error, as it is for the Python parser.
        d.deserialize_any(SkipVisitor)
    }
}

/// The visits of the scalars other than strings, each yielding `$value`.
macro_rules! scalars {
    ($ty:ty, $value:expr) => {
        fn visit_bool<Er>(self, _: bool) -> Result<$ty, Er> {
            Ok($value)
        }
        fn visit_i64<Er>(self, _: i64) -> Result<$ty, Er> {
            Ok($value)
        }
        fn visit_u64<Er>(self, _: u64) -> Result<$ty, Er> {
            Ok($value)
        }
        fn visit_f64<Er>(self, _: f64) -> Result<$ty, Er> {
            Ok($value)
        }
        fn visit_unit<Er>(self) -> Result<$ty, Er> {
            Ok($value)
        }
    };
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    scalars!(Skip, Skip);
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// Implements the visits of a seed that reads only objects (`map`) or only arrays
/// (`seq`): any other value is checked, skipped, and yields the default.
macro_rules! only {
    (map, $value:ty) => {
        only!(@common $value);
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<$value, A::Error> {
            SkipVisitor.visit_seq(seq).map(|_| Default::default())
        }
    };
    (seq, $value:ty) => {
        only!(@common $value);
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$value, A::Error> {
            SkipVisitor.visit_map(map).map(|_| Default::default())
        }
    };
    (@common $value:ty) => {
        scalars!($value, Default::default());
        fn visit_str<Er>(self, _: &str) -> Result<$value, Er> {
            Ok(Default::default())
        }
    };
}

/// The top-level object: its usage (the last `usage` that is an object), and the text
/// of its last `choices` appended to the text. Anything but an object is an error.
struct ChunkSeed<'t>(&'t mut String);

impl<'de> DeserializeSeed<'de> for ChunkSeed<'_> {
    type Value = Option<Usage>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Usage>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChunkSeed<'_> {
    type Value = Option<Usage>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Usage>, A::Error> {
        let start = self.0.len();
        let mut usage = None;
        while let Some(key) = map.next_key_seed(KeyOf(&["usage", "choices"]))? {
            match key {
                0 => {
                    usage = match map.next_value::<Value>()? {
                        Value::Object(u) => Some(usage_of(&u)),
                        _ => None,
                    }
                }
                1 => {
                    self.0.truncate(start);
                    map.next_value_seed(Each(&mut *self.0, ChoiceSeed))?;
                }
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(usage)
    }
}

/// Reads one element of an array into the text.
trait ElementSeed: Copy {
    fn read<'de, D: Deserializer<'de>>(self, out: &mut String, d: D) -> Result<(), D::Error>;
}

/// An array whose elements `E` reads (anything else: nothing).
struct Each<'t, E>(&'t mut String, E);

impl<'de, E: ElementSeed> DeserializeSeed<'de> for Each<'_, E> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, E: ElementSeed> Visitor<'de> for Each<'_, E> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    only!(seq, ());
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Each(out, element) = self;
        while seq
            .next_element_seed(Element(&mut *out, element))?
            .is_some()
        {}
        Ok(())
    }
}

struct Element<'t, E>(&'t mut String, E);

impl<'de, E: ElementSeed> DeserializeSeed<'de> for Element<'_, E> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.1.read(self.0, d)
    }
}

/// A choice: the text of its (last) `delta`.
#[derive(Clone, Copy)]
struct ChoiceSeed;

impl ElementSeed for ChoiceSeed {
    fn read<'de, D: Deserializer<'de>>(self, out: &mut String, d: D) -> Result<(), D::Error> {
        d.deserialize_any(ChoiceVisitor(out))
    }
}

struct ChoiceVisitor<'t>(&'t mut String);

impl<'de> Visitor<'de> for ChoiceVisitor<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a choice")
    }
    only!(map, ());
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let start = self.0.len();
        while let Some(key) = map.next_key_seed(KeyOf(&["delta"]))? {
            if key == 0 {
                self.0.truncate(start);
                map.next_value_seed(DeltaSeed(&mut *self.0))?;
            } else {
                map.next_value::<Skip>()?;
            }
        }
        Ok(())
    }
}

/// A delta: its `content` string, then each tool call's `function.arguments` string.
struct DeltaSeed<'t>(&'t mut String);

impl<'de> DeserializeSeed<'de> for DeltaSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DeltaSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a delta")
    }
    only!(map, ());
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut content: Option<Cow<'de, str>> = None;
        let mut calls = String::new(); // allocates only when a tool call has arguments
        while let Some(key) = map.next_key_seed(KeyOf(&["content", "tool_calls"]))? {
            match key {
                0 => content = map.next_value_seed(StrOrNone)?,
                1 => {
                    calls.clear();
                    map.next_value_seed(Each(&mut calls, CallSeed))?;
                }
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        self.0.push_str(content.as_deref().unwrap_or(""));
        self.0.push_str(&calls);
        Ok(())
    }
}

/// A tool call: the `arguments` string of its (last) `function`.
#[derive(Clone, Copy)]
struct CallSeed;

impl ElementSeed for CallSeed {
    fn read<'de, D: Deserializer<'de>>(self, out: &mut String, d: D) -> Result<(), D::Error> {
        if let Some(args) = d.deserialize_any(Field("function", Field("arguments", StrOrNone)))? {
            out.push_str(&args);
        }
        Ok(())
    }
}

/// The value `S` reads of the last `name` key of an object (None: not an object, no
/// such key, or `S` found nothing).
#[derive(Clone, Copy)]
struct Field<S>(&'static str, S);

impl<'de, S, T> DeserializeSeed<'de> for Field<S>
where
    S: DeserializeSeed<'de, Value = Option<T>> + Copy,
{
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S, T> Visitor<'de> for Field<S>
where
    S: DeserializeSeed<'de, Value = Option<T>> + Copy,
{
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    only!(map, Option<T>);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let names = [self.0];
        let mut found = None;
        while let Some(key) = map.next_key_seed(KeyOf(&names))? {
            if key == 0 {
                found = map.next_value_seed(self.1)?;
            } else {
                map.next_value::<Skip>()?;
            }
        }
        Ok(found)
    }
}

/// A string (borrowed from the input when it has no escapes); None for any other value.
#[derive(Clone, Copy)]
struct StrOrNone;

impl<'de> DeserializeSeed<'de> for StrOrNone {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrOrNone {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }
    scalars!(Self::Value, None);
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        SkipVisitor.visit_seq(seq).map(|_| None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        SkipVisitor.visit_map(map).map(|_| None)
    }
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
