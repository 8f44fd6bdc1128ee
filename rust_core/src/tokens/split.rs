//! tiktoken's pre-tokenizer regexes, hand-compiled for ASCII text.
//!
//! Counting with `fancy_regex` spends most of its time (and, between requests, most of
//! its cache misses) in the regex: ~3.5 µs of a 4.5 µs count of a 100-byte sentence.
//! On ASCII input each pattern reduces to a few byte-class runs, so `pieces` finds the
//! same pieces as the regex with one table lookup per byte. Leftmost-first semantics are
//! kept alternative by alternative (comments quote them); `tests` checks every string of
//! up to 4 bytes over the interesting classes, and random longer ones, against the regex.

/// Byte classes of the patterns, ASCII only: `\p{Lu}`/`\p{Ll}` are A–Z/a–z, `\p{N}` is
/// 0–9, `\s` is Unicode White_Space (\t \n \v \f \r and space; not \x1c–\x1f).
const UP: u8 = 1;
const LO: u8 = 2;
const DIGIT: u8 = 3;
const NEWLINE: u8 = 4; // \r \n
const SPACE: u8 = 5; // \s other than \r \n
const OTHER: u8 = 6; // [^\s\p{L}\p{N}]
const NON_ASCII: u8 = 7; // any byte above 127: the regex decides

const CLASS: [u8; 128] = {
    let mut t = [OTHER; 128];
    let mut c = 0;
    while c < 128 {
        t[c] = match c as u8 {
            b'A'..=b'Z' => UP,
            b'a'..=b'z' => LO,
            b'0'..=b'9' => DIGIT,
            b'\r' | b'\n' => NEWLINE,
            b'\t' | 0x0b | 0x0c | b' ' => SPACE,
            _ => OTHER,
        };
        c += 1;
    }
    t
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pattern {
    Cl100k,
    O200k,
}

/// The end of the piece that starts at `i`, if it can be found from ASCII bytes alone:
/// None when the regex would have to look at a non-ASCII byte to decide (the caller then
/// asks the regex for this piece). Pieces before and after are found here either way,
/// since the patterns look neither behind nor more than a whitespace run ahead.
pub fn ascii_piece(s: &[u8], i: usize, pattern: Pattern) -> Option<usize> {
    let mut scan = Scan { s, seen: i };
    let end = match pattern {
        Pattern::O200k => scan.o200k_end(i),
        Pattern::Cl100k => scan.cl100k_end(i),
    };
    s[i..scan.seen.min(s.len())].is_ascii().then_some(end)
}

/// Calls `piece` with each piece of `text` (which must be ASCII), in order.
pub fn pieces(text: &[u8], pattern: Pattern, mut piece: impl FnMut(&[u8])) {
    debug_assert!(text.is_ascii());
    let mut i = 0;
    while i < text.len() {
        let end = ascii_piece(text, i, pattern).expect("ASCII text");
        piece(&text[i..end]);
        i = end;
    }
}

/// The bytes of a piece search, and how far it has looked (exclusive).
struct Scan<'a> {
    s: &'a [u8],
    seen: usize,
}

impl Scan<'_> {
    /// The class of the byte at `i` (0 past the end, NON_ASCII above 127).
    fn class(&mut self, i: usize) -> u8 {
        self.seen = self.seen.max(i + 1);
        self.s
            .get(i)
            .map_or(0, |&b| CLASS.get(b as usize).copied().unwrap_or(NON_ASCII))
    }

    fn run(&mut self, mut i: usize, keep: impl Fn(u8) -> bool) -> usize {
        while i < self.s.len() && keep(self.class(i)) {
            i += 1;
        }
        self.seen = self.seen.max(i + 1);
        i
    }

    fn byte(&mut self, i: usize) -> Option<u8> {
        self.seen = self.seen.max(i + 1);
        self.s.get(i).copied()
    }

    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)` at `i`: the end of the match, or `i`.
    fn contraction(&mut self, i: usize) -> usize {
        if self.byte(i) != Some(b'\'') {
            return i;
        }
        let (a, b) = (self.byte(i + 1), self.byte(i + 2));
        match (
            a.map(|c| c.to_ascii_lowercase()),
            b.map(|c| c.to_ascii_lowercase()),
        ) {
            (Some(b's' | b't' | b'm' | b'd'), _) => i + 2,
            (Some(b'r' | b'v'), Some(b'e')) | (Some(b'l'), Some(b'l')) => i + 3,
            _ => i,
        }
    }

    /// The whitespace alternatives at a \s byte. o200k: `\s*[\r\n]+` | `\s+(?!\S)` |
    /// `\s+`; cl100k puts `\s++$` first (a run that ends the text is one piece), then the
    /// same three (its `\s*[\r\n]` and `\s` match what `\s*[\r\n]+` and `\s+` match here).
    fn space_end(&mut self, i: usize, end_first: bool) -> usize {
        let s = self.s;
        let before = self.seen;
        let e = self.run(i, |c| c == SPACE || c == NEWLINE);
        // The run ends at a non-ASCII character: what matters is only whether it is \s
        // (it would extend the run). If not, and nothing else looked at it, the split
        // stands (a long ASCII run next to, say, "é" is not handed to the regex whole).
        if e < s.len() && s[e] >= 0x80 && before <= e && !starts_with_space(&s[e..]) {
            self.seen = before.max(e);
        }
        if end_first && e == s.len() {
            return e;
        }
        // \s*[\r\n]+: backtracks to the run's last newline.
        if let Some(p) = s[i..e].iter().rposition(|&b| b == b'\r' || b == b'\n') {
            return i + p + 1;
        }
        // \s+(?!\S): the whole run at the end of the text, else all but its last byte.
        if e == s.len() || e - i == 1 {
            e // (the run of one before a \S byte falls through to \s+)
        } else {
            e - 1
        }
    }

    /// `\p{N}{1,3}` from `i`: at most 3 digits, and the byte after only if fewer (it
    /// may be a non-ASCII digit). Reading the whole run made long numbers quadratic.
    fn digits_end(&mut self, i: usize) -> usize {
        let mut k = i;
        while k < i + 3 && self.class(k) == DIGIT {
            k += 1;
        }
        k
    }

    /// `[^\s\p{L}\p{N}]+` from `i`, then `[\r\n/]*` (o200k) or `[\r\n]*` (cl100k).
    fn punct_end(&mut self, i: usize, slash: bool) -> usize {
        let mut k = self.run(i, |c| c == OTHER);
        while let Some(b) = self.byte(k) {
            if b == b'\r' || b == b'\n' || (slash && b == b'/') {
                k += 1;
            } else {
                break;
            }
        }
        k
    }

    fn o200k_end(&mut self, i: usize) -> usize {
        let c = self.class(i);
        // [^\r\n\p{L}\p{N}]?[Lu..]*[Ll..]+(?i:'s|..)? | [^\r\n\p{L}\p{N}]?[Lu..]+[Ll..]*(?i:..)?
        let j = if opens_word(c) { i + 1 } else { i };
        let upper_end = self.run(j, |c| c == UP);
        let lower_end = self.run(upper_end, |c| c == LO);
        if lower_end > j {
            return self.contraction(lower_end);
        }
        match c {
            DIGIT => self.digits_end(i), // \p{N}{1,3}
            NON_ASCII => i,              // the regex decides (`seen` covers i)
            // ` ?[^\s\p{L}\p{N}]+[\r\n/]*`
            OTHER => self.punct_end(i, true),
            SPACE if self.s[i] == b' ' && self.class(i + 1) == OTHER => self.punct_end(i + 1, true),
            _ => self.space_end(i, false),
        }
    }

    fn cl100k_end(&mut self, i: usize) -> usize {
        let c = self.class(i);
        // '(?i:[sdmt]|ll|ve|re)
        let k = self.contraction(i);
        if k > i {
            return k;
        }
        // [^\r\n\p{L}\p{N}]?+\p{L}++ (possessive, but giving back could not help here)
        let j = if opens_word(c) { i + 1 } else { i };
        let letters_end = self.run(j, |c| c == UP || c == LO);
        if letters_end > j {
            return letters_end;
        }
        match c {
            DIGIT => self.digits_end(i), // \p{N}{1,3}+
            NON_ASCII => i,              // the regex decides (`seen` covers i)
            // ` ?[^\s\p{L}\p{N}]++[\r\n]*+`
            OTHER => self.punct_end(i, false),
            SPACE if self.s[i] == b' ' && self.class(i + 1) == OTHER => {
                self.punct_end(i + 1, false)
            }
            _ => self.space_end(i, true),
        }
    }
}

/// Whether the UTF-8 text `s` (at a character boundary) starts with a Unicode
/// White_Space character (the regex's `\s`; `char::is_whitespace` is that property).
fn starts_with_space(s: &[u8]) -> bool {
    let len = match s[0] {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    };
    std::str::from_utf8(&s[..len.min(s.len())])
        .ok()
        .and_then(|t| t.chars().next())
        .is_some_and(char::is_whitespace)
}

/// `[^\r\n\p{L}\p{N}]?`: whether a byte of this class may open a word.
fn opens_word(c: u8) -> bool {
    c == SPACE || c == OTHER
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_regex(re: &fancy_regex::Regex, text: &str) -> Vec<String> {
        re.find_iter(text)
            .map(|m| m.unwrap().as_str().to_owned())
            .collect()
    }

    fn by_table(text: &str, pattern: Pattern) -> Vec<String> {
        let mut out = Vec::new();
        pieces(text.as_bytes(), pattern, |p| {
            out.push(String::from_utf8(p.to_vec()).unwrap())
        });
        out
    }

    fn check(text: &str, regexes: &[(fancy_regex::Regex, Pattern)]) {
        for (re, pattern) in regexes {
            assert_eq!(
                by_table(text, *pattern),
                by_regex(re, text),
                "{pattern:?} on {text:?}"
            );
        }
    }

    fn regexes() -> Vec<(fancy_regex::Regex, Pattern)> {
        vec![
            (
                fancy_regex::Regex::new(super::super::CL100K_PATTERN).unwrap(),
                Pattern::Cl100k,
            ),
            (
                fancy_regex::Regex::new(super::super::O200K_PATTERN).unwrap(),
                Pattern::O200k,
            ),
        ]
    }

    #[test]
    fn every_short_string_matches_the_regex() {
        // One byte of each class, and the ones the alternatives single out.
        let alphabet = b"aBsSrEl'1 \t\n\r!/\x0b\x00";
        let res = regexes();
        let mut text = Vec::new();
        fn walk(
            text: &mut Vec<u8>,
            alphabet: &[u8],
            depth: usize,
            res: &[(fancy_regex::Regex, Pattern)],
        ) {
            check(std::str::from_utf8(text).unwrap(), res);
            if depth == 0 {
                return;
            }
            for &b in alphabet {
                text.push(b);
                walk(text, alphabet, depth - 1, res);
                text.pop();
            }
        }
        walk(&mut text, alphabet, 4, &res);
    }

    #[test]
    fn random_ascii_matches_the_regex() {
        let res = regexes();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(crate::tokens::xorshift(&mut state) % 40) {
                let r = crate::tokens::xorshift(&mut state);
                // Half the bytes from the word/space classes, half from all of ASCII.
                let b = if r & 1 == 0 {
                    b"ab AB\n 'sll9"[(r >> 8) as usize % 12]
                } else {
                    (r >> 8) as u8 & 0x7f
                };
                text.push(b as char);
            }
            check(&text, &res);
        }
    }
}
