//! Token counting: tiktoken's `cl100k_base` / `o200k_base` (BPE data embedded by
//! `tiktoken-rs`) and OpenAI's cookbook formula for chat requests. Pure Rust.

use crate::cache_key::{parse_object, KeyError};
use serde_json::Value;
use split::Pattern;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;
use tiktoken_rs::{byte_pair_split, Rank};

pub mod chat;
mod split;

pub const CL100K: &str = "cl100k_base";
pub const O200K: &str = "o200k_base";

/// The pre-tokenizer regexes (tiktoken's; also in the Python twin, `_twins/_tokens.py`).
pub const CL100K_PATTERN: &str = concat!(
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|",
    r" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"
);
pub const O200K_PATTERN: &str = tiktoken_rs::O200K_BASE_PAT_STR;

/// One encoding: its merge ranks and its pre-tokenizer (the regex, and the same split
/// compiled by hand for ASCII text in `split`).
pub struct Encoding {
    ranks: rustc_hash::FxHashMap<Vec<u8>, Rank>,
    regex: fancy_regex::Regex,
    pattern: Pattern,
}

impl Encoding {
    /// Ranks from tiktoken-rs's embedded BPE files (every ordinary token, decoded).
    fn load(bpe: &tiktoken_rs::CoreBPE, pattern: Pattern, regex: &str) -> Self {
        let specials = bpe.special_tokens();
        let mut ranks = rustc_hash::FxHashMap::default();
        let mut misses = 0;
        for rank in 0.. {
            match bpe.decode_bytes(&[rank]) {
                Ok(bytes) => {
                    misses = 0;
                    if !std::str::from_utf8(&bytes).is_ok_and(|s| specials.contains(s)) {
                        ranks.insert(bytes, rank);
                    }
                }
                Err(_) if misses > 1_000 => break, // past the last rank
                Err(_) => misses += 1,
            }
        }
        let regex = fancy_regex::Regex::new(regex).expect("tiktoken's pattern compiles");
        Encoding {
            ranks,
            regex,
            pattern,
        }
    }

    /// Exact number of tokens of `text`: `encode_ordinary(text).len()` (special tokens
    /// are counted as ordinary text). Fails only where the regex gives up (its
    /// backtracking stack, e.g. on ~1M non-ASCII spaces): tiktoken panics there.
    pub fn count(&self, text: &str) -> Result<usize, KeyError> {
        let mut n = 0;
        let mut add = |piece: &[u8]| {
            n += if self.ranks.contains_key(piece) {
                1
            } else {
                merge_count(piece, &self.ranks, LARGE_PIECE)
            }
        };
        if text.is_ascii() {
            split::pieces(text.as_bytes(), self.pattern, add);
            return Ok(n);
        }
        // Mixed text: the hand split wherever it can decide from ASCII bytes, the regex
        // for the pieces at and around other characters (the patterns look neither
        // behind nor, past a whitespace run, ahead, so the two can take turns).
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let end = match split::ascii_piece(bytes, i, self.pattern) {
                Some(end) => end,
                None => match self.regex.find_from_pos(text, i) {
                    // Every character is matched by some alternative: the next match
                    // starts here.
                    Ok(Some(m)) if m.start() == i => m.end(),
                    other => {
                        return Err(KeyError(format!(
                            "the tokenizer's pattern failed at byte {i}: {other:?}"
                        )))
                    }
                },
            };
            add(&bytes[i..end]);
            i = end;
        }
        Ok(n)
    }
}

/// Pieces at least this long are merged with a heap (tiktoken's `_byte_pair_merge_large`
/// does the same): the pairwise scan is quadratic, and one long word is one piece.
const LARGE_PIECE: usize = 100;

/// How many tokens BPE merges `piece` (not itself a token, so > 1 byte) into: repeatedly
/// the adjacent pair of lowest rank, the leftmost of equals, as tiktoken does.
fn merge_count(piece: &[u8], ranks: &rustc_hash::FxHashMap<Vec<u8>, Rank>, large: usize) -> usize {
    let n = piece.len();
    if n < large {
        return byte_pair_split(piece, ranks).len();
    }
    // Parts as a linked list of start offsets; `rank[i]`: the pair starting at part i.
    let mut next: Vec<usize> = (1..=n).collect();
    let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
    let mut rank = vec![Rank::MAX; n];
    let mut heap = BinaryHeap::new();
    let pair = |next: &[usize], i: usize| {
        let j = next[i];
        (j < n)
            .then(|| ranks.get(&piece[i..next[j]]).copied())
            .flatten()
    };
    for i in 0..n - 1 {
        if let Some(r) = ranks.get(&piece[i..i + 2]) {
            rank[i] = *r;
            heap.push(Reverse((*r, i)));
        }
    }
    let mut parts = n;
    while let Some(Reverse((r, i))) = heap.pop() {
        if rank[i] != r {
            continue; // stale: the pair at i has grown (a longer span has another rank)
        }
        let j = next[i];
        next[i] = next[j];
        if next[j] < n {
            prev[next[j]] = i;
        }
        rank[j] = Rank::MAX;
        parts -= 1;
        for k in [i, prev[i]] {
            if k < n {
                rank[k] = pair(&next, k).unwrap_or(Rank::MAX);
                if rank[k] != Rank::MAX {
                    heap.push(Reverse((rank[k], k)));
                }
            }
        }
    }
    parts
}

static CL100K_ENC: OnceLock<Encoding> = OnceLock::new();
static O200K_ENC: OnceLock<Encoding> = OnceLock::new();

/// The tokenizer for an encoding name, built on first use.
pub fn bpe(encoding: &str) -> Result<&'static Encoding, KeyError> {
    match encoding {
        CL100K => Ok(CL100K_ENC.get_or_init(|| {
            let bpe = tiktoken_rs::cl100k_base().expect("embedded BPE");
            Encoding::load(&bpe, Pattern::Cl100k, CL100K_PATTERN)
        })),
        O200K => Ok(O200K_ENC.get_or_init(|| {
            let bpe = tiktoken_rs::o200k_base().expect("embedded BPE");
            Encoding::load(&bpe, Pattern::O200k, O200K_PATTERN)
        })),
        other => Err(KeyError(format!(
            "unknown encoding {other:?} (expected \"cl100k_base\" or \"o200k_base\")"
        ))),
    }
}

/// Exact number of tokens of `text` (special tokens are counted as ordinary text).
pub fn count_tokens(text: &str, encoding: &str) -> Result<usize, KeyError> {
    bpe(encoding)?.count(text)
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

/// Prompt tokens of a request body by the cookbook formula (docs/core.md).
pub fn count_chat_tokens(body: &[u8]) -> Result<usize, KeyError> {
    chat::count_chat(&&Value::Object(parse_object(body)?))
}

/// xorshift64 for the tests' random texts: a fixed seed gives the same texts every run.
#[cfg(test)]
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
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
    fn heap_merge_matches_the_pairwise_merge() {
        let enc = bpe(O200K).unwrap();
        let mut state: u64 = 7;
        for len in 2..300 {
            let piece: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    b"aab ethq"[(state >> 40) as usize % 8]
                })
                .collect();
            assert_eq!(
                merge_count(&piece, &enc.ranks, 0),
                byte_pair_split(&piece, &enc.ranks).len(),
                "{piece:?}"
            );
        }
    }

    #[test]
    fn mixed_text_counts_like_tiktoken() {
        // ASCII next to letters, digits and spaces that are not: the hand split and the
        // regex take turns at every kind of boundary.
        let alphabet = [
            "a", "B", "'s", "'LL", "1", " ", "  ", "\t", "\n", "\r\n", "!", "/", "\u{0b}", "é",
            "É", "ß", "\u{a0}", "\u{3000}", "\u{2028}", "中", "😀", "\u{0301}", "\u{0661}", "Ⅻ",
        ];
        let pairs = [
            (CL100K, tiktoken_rs::cl100k_base().unwrap()),
            (O200K, tiktoken_rs::o200k_base().unwrap()),
        ];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(super::xorshift(&mut state) % 24) {
                let r = super::xorshift(&mut state);
                text.push_str(alphabet[(r >> 11) as usize % alphabet.len()]);
            }
            for (name, reference) in &pairs {
                let expected = reference.encode_ordinary(&text).len();
                assert_eq!(
                    count_tokens(&text, name).unwrap(),
                    expected,
                    "{name} on {text:?}"
                );
            }
        }
    }

    #[test]
    fn chat_formula() {
        // The cookbook example: 2 messages of 1 token each, one name.
        let body = br#"{"model":"gpt-4","messages":[{"role":"system","content":"hi"},{"role":"user","name":"bob","content":"hi"}]}"#;
        let expected = 3 + 1 + 1 + 3 + 1 + 1 + 1 + 1 + 3; // role+content, name
        assert_eq!(count_chat_tokens(body).unwrap(), expected);
    }
}
