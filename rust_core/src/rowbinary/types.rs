//! Parser for the ClickHouse type strings the encoder supports.

/// A column type. `LowCardinality(T)` is encoded as `T` and parses to it.
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    String,
    FixedString(usize),
    Nullable(Box<Type>),
    Array(Box<Type>),
    Map(Box<Type>, Box<Type>),
    /// Enum8 (`wide` = false) or Enum16.
    Enum {
        wide: bool,
        labels: Vec<(String, i16)>,
    },
    Int {
        bytes: u8,
        signed: bool,
    },
    Float32,
    Float64,
    Bool,
    Date,
    DateTime,
    /// Precision P: ticks of 10^-P seconds.
    DateTime64(u32),
    Uuid,
}

impl Type {
    /// A short name for messages.
    pub fn name(&self) -> String {
        match self {
            Type::String => "String".into(),
            Type::FixedString(n) => format!("FixedString({n})"),
            Type::Nullable(t) => format!("Nullable({})", t.name()),
            Type::Array(t) => format!("Array({})", t.name()),
            Type::Map(k, v) => format!("Map({}, {})", k.name(), v.name()),
            Type::Enum { wide: false, .. } => "Enum8".into(),
            Type::Enum { wide: true, .. } => "Enum16".into(),
            Type::Int { bytes, signed } => {
                format!(
                    "{}Int{}",
                    if *signed { "" } else { "U" },
                    u32::from(*bytes) * 8
                )
            }
            Type::Float32 => "Float32".into(),
            Type::Float64 => "Float64".into(),
            Type::Bool => "Bool".into(),
            Type::Date => "Date".into(),
            Type::DateTime => "DateTime".into(),
            Type::DateTime64(p) => format!("DateTime64({p})"),
            Type::Uuid => "UUID".into(),
        }
    }
}

/// Parses one ClickHouse type string.
pub fn parse_type(s: &str) -> Result<Type, String> {
    let mut p = Parser {
        s: s.as_bytes(),
        i: 0,
    };
    let t = p
        .ty()
        .map_err(|e| format!("cannot parse type '{s}': {e}"))?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("cannot parse type '{s}': trailing characters"));
    }
    Ok(t)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at offset {}", c as char, self.i))
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn ident(&mut self) -> String {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    fn int(&mut self) -> Result<i64, String> {
        self.ws();
        let start = self.i;
        if self.s.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("expected an integer at offset {start}"))
    }

    /// A single-quoted string with backslash escapes (`\\'`) or doubled quotes (`''`).
    fn quoted(&mut self) -> Result<String, String> {
        self.eat(b'\'')?;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.i) {
                None => return Err("unterminated string".into()),
                Some(b'\'') if self.s.get(self.i + 1) == Some(&b'\'') => {
                    out.push(b'\'');
                    self.i += 2;
                }
                Some(b'\'') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    let c = *self.s.get(self.i + 1).ok_or("unterminated string")?;
                    out.push(c);
                    self.i += 2;
                }
                Some(&c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| "invalid UTF-8 in a label".to_string())
    }

    fn ty(&mut self) -> Result<Type, String> {
        let name = self.ident();
        let int = |bytes, signed| Ok(Type::Int { bytes, signed });
        match name.as_str() {
            "String" => Ok(Type::String),
            "UInt8" => int(1, false),
            "UInt16" => int(2, false),
            "UInt32" => int(4, false),
            "UInt64" => int(8, false),
            "Int8" => int(1, true),
            "Int16" => int(2, true),
            "Int32" => int(4, true),
            "Int64" => int(8, true),
            "Float32" => Ok(Type::Float32),
            "Float64" => Ok(Type::Float64),
            "Bool" => Ok(Type::Bool),
            "Date" => Ok(Type::Date),
            "UUID" => Ok(Type::Uuid),
            "DateTime" => {
                if self.peek() == Some(b'(') {
                    self.eat(b'(')?;
                    self.quoted()?;
                    self.eat(b')')?;
                }
                Ok(Type::DateTime)
            }
            "DateTime64" => {
                self.eat(b'(')?;
                let p = self.int()?;
                if !(0..=9).contains(&p) {
                    return Err(format!("DateTime64 precision {p} is not in 0..=9"));
                }
                if self.peek() == Some(b',') {
                    self.eat(b',')?;
                    self.quoted()?;
                }
                self.eat(b')')?;
                Ok(Type::DateTime64(p as u32))
            }
            "FixedString" => {
                self.eat(b'(')?;
                let n = self.int()?;
                self.eat(b')')?;
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("FixedString size must be positive")?;
                Ok(Type::FixedString(n))
            }
            "LowCardinality" => self.wrapped(|t| t),
            "Nullable" => self.wrapped(|t| Type::Nullable(Box::new(t))),
            "Array" => self.wrapped(|t| Type::Array(Box::new(t))),
            "Map" => {
                self.eat(b'(')?;
                let k = self.ty()?;
                self.eat(b',')?;
                let v = self.ty()?;
                self.eat(b')')?;
                Ok(Type::Map(Box::new(k), Box::new(v)))
            }
            "Enum8" | "Enum16" => self.enumeration(name == "Enum16"),
            "" => Err(format!("expected a type name at offset {}", self.i)),
            other => Err(format!("unsupported type {other}")),
        }
    }

    fn wrapped(&mut self, f: impl FnOnce(Type) -> Type) -> Result<Type, String> {
        self.eat(b'(')?;
        let t = self.ty()?;
        self.eat(b')')?;
        Ok(f(t))
    }

    fn enumeration(&mut self, wide: bool) -> Result<Type, String> {
        self.eat(b'(')?;
        let mut labels = Vec::new();
        loop {
            let label = self.quoted()?;
            self.eat(b'=')?;
            let v = self.int()?;
            let (lo, hi) = if wide { (-32768, 32767) } else { (-128, 127) };
            if !(lo..=hi).contains(&v) {
                return Err(format!("enum value {v} is out of range"));
            }
            labels.push((label, v as i16));
            if self.peek() == Some(b',') {
                self.eat(b',')?;
            } else {
                break;
            }
        }
        self.eat(b')')?;
        Ok(Type::Enum { wide, labels })
    }
}
