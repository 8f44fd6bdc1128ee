use super::*;

#[derive(Clone, Debug)]
enum V {
    None,
    S(&'static str),
    I(i128),
    F(f64),
    B(bool),
    L(Vec<V>),
    M(Vec<(V, V)>),
}

impl Input for V {
    fn is_none(&self) -> bool {
        matches!(self, V::None)
    }
    fn as_text(&self) -> Option<Cow<'_, str>> {
        match self {
            V::S(s) => Some(Cow::Borrowed(s)),
            _ => None,
        }
    }
    fn as_blob(&self) -> Option<Cow<'_, [u8]>> {
        None
    }
    fn as_bool(&self) -> Option<bool> {
        match self {
            V::B(b) => Some(*b),
            _ => None,
        }
    }
    fn as_int(&self) -> Option<Int> {
        match self {
            V::I(i) => Some(Int::Value(*i)),
            _ => None,
        }
    }
    fn as_float(&self) -> Option<f64> {
        match self {
            V::F(f) => Some(*f),
            _ => None,
        }
    }
    fn as_list(&self) -> Option<Vec<Self>> {
        match self {
            V::L(l) => Some(l.clone()),
            _ => None,
        }
    }
    fn as_map(&self) -> Option<Vec<(Self, Self)>> {
        match self {
            V::M(m) => Some(m.clone()),
            _ => None,
        }
    }
    fn as_datetime_micros(&self) -> Option<Result<i128, String>> {
        None
    }
    fn as_date_days(&self) -> Option<i64> {
        None
    }
    fn as_uuid(&self) -> Option<u128> {
        None
    }
    fn type_name(&self) -> String {
        format!("{self:?}")
    }
}

fn enc(ty: &str, v: Option<V>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    encode(&parse_type(ty)?, v.as_ref(), &mut out)?;
    Ok(out)
}

#[test]
fn scalars() {
    assert_eq!(enc("String", Some(V::S("ab"))).unwrap(), b"\x02ab");
    assert_eq!(enc("LowCardinality(String)", None).unwrap(), b"\x00");
    assert_eq!(enc("UInt16", Some(V::I(258))).unwrap(), [2, 1]);
    assert_eq!(enc("Int8", Some(V::I(-1))).unwrap(), [255]);
    assert!(enc("UInt8", Some(V::I(256))).is_err());
    assert!(enc("Int64", Some(V::F(1.0))).is_err());
    assert_eq!(enc("Float32", Some(V::I(1))).unwrap(), 1.0f32.to_le_bytes());
    assert!(enc("Float32", Some(V::F(1e300))).is_err());
    assert_eq!(
        enc("Float64", Some(V::F(f64::NAN))).unwrap(),
        f64::NAN.to_le_bytes()
    );
    assert_eq!(enc("Bool", Some(V::B(true))).unwrap(), [1]);
    assert_eq!(enc("FixedString(3)", Some(V::S("a"))).unwrap(), b"a\0\0");
    assert!(enc("FixedString(1)", Some(V::S("ab"))).is_err());
}

#[test]
fn composites_and_nulls() {
    assert_eq!(enc("Nullable(String)", None).unwrap(), [1]);
    assert_eq!(enc("Nullable(String)", Some(V::None)).unwrap(), [1]);
    assert_eq!(enc("UInt32", Some(V::None)).unwrap(), [0; 4]);
    assert_eq!(enc("Nullable(UInt8)", Some(V::I(7))).unwrap(), [0, 7]);
    let arr = V::L(vec![V::S("a"), V::S("b")]);
    assert_eq!(
        enc("Array(LowCardinality(String))", Some(arr)).unwrap(),
        b"\x02\x01a\x01b"
    );
    let map = V::M(vec![(V::S("k"), V::S("v"))]);
    assert_eq!(
        enc("Map(String, String)", Some(map)).unwrap(),
        b"\x01\x01k\x01v"
    );
    assert_eq!(enc("Map(String, String)", None).unwrap(), [0]);
    let long = "x".repeat(300);
    let mut out = Vec::new();
    varint(long.len() as u64, &mut out);
    assert_eq!(out, [0xAC, 0x02]);
}

#[test]
fn enums_dates_uuids() {
    let ty = "Enum8('a' = 1, 'b\\'c' = -2)";
    assert_eq!(enc(ty, Some(V::S("b'c"))).unwrap(), [254]);
    assert!(enc(ty, Some(V::S("z"))).is_err());
    assert!(enc(ty, None).is_err());
    assert_eq!(
        enc("Enum16('a' = 300)", Some(V::S("a"))).unwrap(),
        300i16.to_le_bytes()
    );
    assert_eq!(
        enc("DateTime64(3, 'UTC')", Some(V::I(1_700_000_000_123))).unwrap(),
        1_700_000_000_123i64.to_le_bytes()
    );
    assert!(enc("DateTime64(3)", None).is_err());
    assert!(enc("DateTime", Some(V::I(-1))).is_err());
    let u = "01234567-89ab-cdef-0123-456789abcdef";
    let mut expected = 0x0123_4567_89ab_cdefu64.to_le_bytes().to_vec();
    expected.extend(0x0123_4567_89ab_cdefu64.to_le_bytes());
    assert_eq!(enc("UUID", Some(V::S(u))).unwrap(), expected);
    assert!(enc("UUID", Some(V::S("nope"))).is_err());
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    assert_eq!(days_from_civil(1969, 12, 31), -1);
}

#[test]
fn type_parser() {
    assert_eq!(
        parse_type(" Nullable( Float32 ) ").unwrap(),
        Type::Nullable(Box::new(Type::Float32))
    );
    assert_eq!(parse_type("DateTime('UTC')").unwrap(), Type::DateTime);
    let doubled = Type::Enum {
        wide: false,
        labels: vec![("it's".into(), 1)],
    };
    assert_eq!(parse_type("Enum8('it''s' = 1)").unwrap(), doubled);
    for bad in [
        "",
        "Strin",
        "Array(String",
        "Decimal(10, 2)",
        "DateTime64(10)",
        "Enum8('a' = 200)",
        "String x",
    ] {
        assert!(parse_type(bad).is_err(), "{bad}");
    }
}
