//! Token counting: tiktoken's `cl100k_base` / `o200k_base` (BPE data embedded by
//! `tiktoken-rs`) and OpenAI's cookbook formula for chat requests. Pure Rust.

use crate::cache_key::{parse_object, KeyError};
use serde_json::{Map, Value};
use std::sync::OnceLock;
use tiktoken_rs::CoreBPE;

pub const CL100K: &str = "cl100k_base";
pub const O200K: &str = "o200k_base";

static CL100K_BPE: OnceLock<CoreBPE> = OnceLock::new();
static O200K_BPE: OnceLock<CoreBPE> = OnceLock::new();

/// The tokenizer for an encoding name, built on first use.
pub fn bpe(encoding: &str) -> Result<&'static CoreBPE, KeyError> {
    match encoding {
        CL100K => Ok(CL100K_BPE.get_or_init(|| tiktoken_rs::cl100k_base().expect("embedded BPE"))),
        O200K => Ok(O200K_BPE.get_or_init(|| tiktoken_rs::o200k_base().expect("embedded BPE"))),
        other => Err(KeyError(format!(
            "unknown encoding {other:?} (expected \"cl100k_base\" or \"o200k_base\")"
        ))),
    }
}

/// Exact number of tokens of `text` (special tokens are counted as ordinary text).
pub fn count_tokens(text: &str, encoding: &str) -> Result<usize, KeyError> {
    Ok(count_with(bpe(encoding)?, text))
}

fn count_with(bpe: &CoreBPE, text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        bpe.encode_ordinary(text).len()
    }
}

/// Models that use o200k_base although their name starts like a cl100k model.
const O200K_PREFIXES: [&str; 4] = ["gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o"];
const CL100K_PREFIXES: [&str; 5] = [
    "gpt-4",
    "gpt-3.5",
    "gpt-35",
    "text-embedding-3",
    "text-embedding-ada-002",
];

/// The encoding of a model (provider prefixes like `openai/` are ignored; unknown
/// models get o200k_base).
pub fn encoding_for_model(model: &str) -> &'static str {
    let name = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    if O200K_PREFIXES.iter().any(|p| name.starts_with(p)) {
        O200K
    } else if CL100K_PREFIXES.iter().any(|p| name.starts_with(p)) {
        CL100K
    } else {
        O200K
    }
}

const TOKENS_PER_MESSAGE: usize = 3;
const TOKENS_PER_NAME: usize = 1;
const REPLY_PRIMING: usize = 3;

/// Prompt tokens of a request body by the cookbook formula (docs/core.md).
pub fn count_chat_tokens(body: &[u8]) -> Result<usize, KeyError> {
    let map = parse_object(body)?;
    let encoding = match map.get("model") {
        Some(Value::String(m)) => encoding_for_model(m),
        _ => O200K,
    };
    let bpe = bpe(encoding)?;
    let count = |s: &str| count_with(bpe, s);
    let mut total = 0;
    if let Some(Value::Array(messages)) = map.get("messages") {
        for message in messages.iter().filter_map(Value::as_object) {
            total += TOKENS_PER_MESSAGE;
            for (key, value) in message {
                if key == "name" {
                    total += TOKENS_PER_NAME;
                }
                total += match (key.as_str(), value) {
                    ("content", Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .map(count)
                        .sum(),
                    _ => string_leaves(value, &count),
                };
            }
        }
        total += REPLY_PRIMING;
    } else {
        for field in ["prompt", "input"] {
            total += match map.get(field) {
                Some(Value::String(s)) => count(s),
                Some(Value::Array(items)) => {
                    items.iter().filter_map(Value::as_str).map(count).sum()
                }
                _ => 0,
            };
        }
    }
    Ok(total + tools_tokens(&map, encoding, &count))
}

/// Tokens of every string inside a value (object keys excluded).
fn string_leaves(v: &Value, count: &dyn Fn(&str) -> usize) -> usize {
    match v {
        Value::String(s) => count(s),
        Value::Array(items) => items.iter().map(|x| string_leaves(x, count)).sum(),
        Value::Object(map) => map.values().map(|x| string_leaves(x, count)).sum(),
        _ => 0,
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The cookbook's function-schema formula over `tools` (type "function") and the
/// legacy `functions` field.
fn tools_tokens(map: &Map<String, Value>, encoding: &str, count: &dyn Fn(&str) -> usize) -> usize {
    let func_init: i64 = if encoding == CL100K { 10 } else { 7 };
    let (prop_init, prop_key, enum_init, enum_item, func_end) = (3i64, 3i64, -3i64, 3i64, 12i64);
    let mut functions: Vec<&Value> = Vec::new();
    if let Some(Value::Array(tools)) = map.get("tools") {
        functions.extend(
            tools
                .iter()
                .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
                .filter_map(|t| t.get("function").filter(|f| f.is_object())),
        );
    }
    if let Some(Value::Array(legacy)) = map.get("functions") {
        functions.extend(legacy.iter().filter(|f| f.is_object()));
    }
    if functions.is_empty() {
        return 0;
    }
    let mut total: i64 = func_end;
    for function in functions {
        total += func_init;
        let desc = str_field(function, "description");
        let line = format!(
            "{}:{}",
            str_field(function, "name"),
            desc.strip_suffix('.').unwrap_or(desc)
        );
        total += count(&line) as i64;
        let props = function
            .get("parameters")
            .and_then(|p| p.get("properties"))
            .and_then(Value::as_object);
        let Some(props) = props.filter(|p| !p.is_empty()) else {
            continue;
        };
        total += prop_init;
        for (name, prop) in props {
            total += prop_key;
            if let Some(items) = prop.get("enum") {
                total += enum_init;
                for item in items.as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    total += enum_item + item.as_str().map_or(0, |s| count(s) as i64);
                }
            }
            let desc = str_field(prop, "description");
            let line = format!(
                "{name}:{}:{}",
                str_field(prop, "type"),
                desc.strip_suffix('.').unwrap_or(desc)
            );
            total += count(&line) as i64;
        }
    }
    total.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_counts() {
        assert_eq!(count_tokens("hello world", CL100K).unwrap(), 2);
        assert_eq!(count_tokens("hello world", O200K).unwrap(), 2);
        assert_eq!(count_tokens("", O200K).unwrap(), 0);
        // From tiktoken's own test-suite.
        assert_eq!(count_tokens("tiktoken is great!", CL100K).unwrap(), 6);
        assert!(count_tokens("x", "p50k_base").is_err());
    }

    #[test]
    fn model_map() {
        assert_eq!(encoding_for_model("gpt-4o-mini"), O200K);
        assert_eq!(encoding_for_model("openai/gpt-4.1"), O200K);
        assert_eq!(encoding_for_model("gpt-4-turbo"), CL100K);
        assert_eq!(encoding_for_model("gpt-3.5-turbo"), CL100K);
        assert_eq!(encoding_for_model("text-embedding-3-small"), CL100K);
        assert_eq!(encoding_for_model("o3-mini"), O200K);
        assert_eq!(encoding_for_model("some-llama"), O200K);
    }

    #[test]
    fn chat_formula() {
        // The cookbook example: 2 messages of 1 token each, one name.
        let body = br#"{"model":"gpt-4","messages":[{"role":"system","content":"hi"},{"role":"user","name":"bob","content":"hi"}]}"#;
        let expected = 3 + 1 + 1 + 3 + 1 + 1 + 1 + 1 + 3; // role+content, name
        assert_eq!(count_chat_tokens(body).unwrap(), expected);
    }
}
