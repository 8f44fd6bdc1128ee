//! OpenAI's cookbook formula for a chat request's prompt tokens, over any JSON tree:
//! serde_json's `Value` (a body parsed here), or — in the Python bindings — the dict
//! orjson already made of it, which spares a second parse (most of a small count's cost).
use super::{bpe, encoding_for_model, CL100K, O200K};
use crate::cache_key::KeyError;
use serde_json::Value;
use std::borrow::Cow;
use std::cell::RefCell;

const TOKENS_PER_MESSAGE: usize = 3;
const TOKENS_PER_NAME: usize = 1;
const REPLY_PRIMING: usize = 3;

/// What the formula reads of a JSON value.
pub trait Json: Sized {
    /// The string, if this is one.
    fn text(&self) -> Option<Cow<'_, str>>;
    /// The member `key`, if this is an object that has it.
    fn member(&self, key: &str) -> Option<Self>;
    fn is_object(&self) -> bool;
    /// Calls `f` with each element; false (and no call) if this is not an array.
    fn each_item(&self, f: &mut dyn FnMut(Self)) -> bool;
    /// Calls `f` with each member; false (and no call) if this is not an object.
    fn each_entry(&self, f: &mut dyn FnMut(&str, Self)) -> bool;
}

impl Json for &Value {
    fn text(&self) -> Option<Cow<'_, str>> {
        self.as_str().map(Cow::Borrowed)
    }
    fn member(&self, key: &str) -> Option<Self> {
        self.get(key)
    }
    fn is_object(&self) -> bool {
        Value::is_object(self)
    }
    fn each_item(&self, f: &mut dyn FnMut(Self)) -> bool {
        self.as_array()
            .map(|items| items.iter().for_each(f))
            .is_some()
    }
    fn each_entry(&self, f: &mut dyn FnMut(&str, Self)) -> bool {
        self.as_object()
            .map(|m| m.iter().for_each(|(k, v)| f(k, v)))
            .is_some()
    }
}

/// Prompt tokens of a chat (or completions) request by the cookbook formula (docs/core.md).
pub fn count_chat<J: Json>(root: &J) -> Result<usize, KeyError> {
    let encoding = root
        .member("model")
        .and_then(|m| m.text().map(|s| encoding_for_model(&s)))
        .unwrap_or(O200K);
    let enc = bpe(encoding)?;
    // The first count that fails fails the whole (see `Encoding::count`).
    let failed = RefCell::new(None);
    let count = |s: &str| {
        enc.count(s).unwrap_or_else(|e| {
            failed.borrow_mut().get_or_insert(e);
            0
        })
    };
    let mut total = 0;
    let messages = root.member("messages");
    let is_list = messages.is_some_and(|m| {
        m.each_item(&mut |message| {
            if !message.is_object() {
                return;
            }
            total += TOKENS_PER_MESSAGE;
            message.each_entry(&mut |key, value| {
                if key == "name" {
                    total += TOKENS_PER_NAME;
                }
                let mut parts = 0;
                let is_parts = key == "content"
                    && value.each_item(&mut |part| {
                        if let Some(text) = part.member("text").as_ref().and_then(J::text) {
                            parts += count(&text);
                        }
                    });
                total += if is_parts {
                    parts
                } else {
                    string_leaves(&value, &count)
                };
            });
        })
    });
    if is_list {
        total += REPLY_PRIMING;
    } else {
        for field in ["prompt", "input"] {
            let Some(value) = root.member(field) else {
                continue;
            };
            if let Some(s) = value.text() {
                total += count(&s);
            } else {
                value.each_item(&mut |x| total += x.text().map_or(0, |s| count(&s)));
            }
        }
    }
    total += tools_tokens(root, encoding, &count);
    failed.into_inner().map_or(Ok(total), Err)
}

/// Tokens of every string inside a value (object keys excluded).
fn string_leaves<J: Json>(v: &J, count: &dyn Fn(&str) -> usize) -> usize {
    if let Some(s) = v.text() {
        return count(&s);
    }
    let mut total = 0;
    if !v.each_item(&mut |x| total += string_leaves(&x, count)) {
        v.each_entry(&mut |_, x| total += string_leaves(&x, count));
    }
    total
}

fn str_field<J: Json>(v: &J, key: &str) -> String {
    v.member(key)
        .and_then(|x| x.text().map(Cow::into_owned))
        .unwrap_or_default()
}

/// The cookbook's function-schema formula over `tools` (type "function") and the
/// legacy `functions` field.
fn tools_tokens<J: Json>(root: &J, encoding: &str, count: &dyn Fn(&str) -> usize) -> usize {
    let func_init: i64 = if encoding == CL100K { 10 } else { 7 };
    let (prop_init, prop_key, enum_init, enum_item, func_end) = (3i64, 3i64, -3i64, 3i64, 12i64);
    let mut functions: Vec<J> = Vec::new();
    if let Some(tools) = root.member("tools") {
        tools.each_item(&mut |t| {
            let is_function =
                t.member("type").as_ref().and_then(J::text).as_deref() == Some("function");
            if let Some(f) = t
                .member("function")
                .filter(|f| is_function && f.is_object())
            {
                functions.push(f);
            }
        });
    }
    if let Some(legacy) = root.member("functions") {
        legacy.each_item(&mut |f| {
            if f.is_object() {
                functions.push(f);
            }
        });
    }
    if functions.is_empty() {
        return 0;
    }
    let count = |s: &str| count(s) as i64;
    let mut total: i64 = func_end;
    for function in functions {
        total += func_init;
        let desc = str_field(&function, "description");
        let desc = desc.strip_suffix('.').unwrap_or(&desc);
        total += count(&format!("{}:{desc}", str_field(&function, "name")));
        let Some(props) = function
            .member("parameters")
            .and_then(|p| p.member("properties"))
        else {
            continue;
        };
        let mut body = 0;
        let mut any = false;
        props.each_entry(&mut |name, prop| {
            any = true;
            body += prop_key;
            if let Some(items) = prop.member("enum") {
                body += enum_init;
                items.each_item(&mut |item| {
                    body += enum_item + item.text().map_or(0, |s| count(&s));
                });
            }
            let desc = str_field(&prop, "description");
            let desc = desc.strip_suffix('.').unwrap_or(&desc);
            body += count(&format!("{name}:{}:{desc}", str_field(&prop, "type")));
        });
        if any {
            total += prop_init + body;
        }
    }
    total.max(0) as usize
}
