//! What the producer reads of a JSON value (its time and key fields), and `harness replay --top` of a row,
//! without building the value: a hand-written reader for the flat objects producers send, and serde_json
//! for everything else. The flat reader takes only what serde_json takes, with the same result; what it is
//! unsure of (an escape, a fraction, a container, any syntax error) it leaves to serde_json.

use std::borrow::Cow;

/// What the producer reads of a JSON value: the time field, the key field (a string) and how many other
/// members it has, without building the whole value. A repeated time or key field: the last one counts.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct TopFields<'a> {
    pub(crate) time: Option<Scalar<'a>>,
    pub(crate) key: Option<Cow<'a, str>>,
    pub(crate) others: usize,
}

/// A member's value as far as the producer reads it: text (borrowed unless it has escapes), a number, or
/// anything else (skipped).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Text(Cow<'a, str>),
    Number(serde_json::Number),
    Other,
}

impl<'a> Scalar<'a> {
    fn into_text(self) -> Option<Cow<'a, str>> {
        match self {
            Scalar::Text(text) => Some(text),
            _ => None,
        }
    }
}

impl<'a> TopFields<'a> {
    /// `None` unless `value` is one JSON object. A flat object, what producers send, is read by
    /// [`read_flat`]; anything it does not take is read by serde_json, which decides.
    pub(crate) fn read(value: &'a [u8], time_field: Option<&str>, key_field: Option<&str>) -> Option<TopFields<'a>> {
        read_flat(value, time_field, key_field).or_else(|| TopFields::read_full(value, time_field, key_field))
    }

    fn read_full(value: &'a [u8], time_field: Option<&str>, key_field: Option<&str>) -> Option<TopFields<'a>> {
        use serde::de::DeserializeSeed;
        let mut reader = serde_json::Deserializer::from_slice(value);
        let fields = FieldsSeed { time_field, key_field }.deserialize(&mut reader).ok()?;
        reader.end().ok()?;
        Some(fields)
    }
}

struct FieldsSeed<'a> {
    time_field: Option<&'a str>,
    key_field: Option<&'a str>,
}

impl<'de> serde::de::DeserializeSeed<'de> for FieldsSeed<'_> {
    type Value = TopFields<'de>;

    /// Anything but an object is an error (of serde's own), which `TopFields::read` turns into `None`.
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldsSeed<'_> {
    type Value = TopFields<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = TopFields::default();
        let names = NameSeed { time_field: self.time_field, key_field: self.key_field };
        while let Some(name) = map.next_key_seed(names)? {
            match name {
                Name::Time => fields.time = Some(map.next_value()?),
                Name::Key => {
                    fields.key = map.next_value::<Scalar>()?.into_text();
                    fields.others += 1;
                }
                Name::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    fields.others += 1;
                }
            }
        }
        Ok(fields)
    }
}

impl<'de> serde::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> serde::de::Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(Cow::Owned(text.to_string())))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(number.into()))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(number.into()))
    }

    fn visit_f64<E>(self, number: f64) -> Result<Scalar<'de>, E> {
        Ok(serde_json::Number::from_f64(number).map_or(Scalar::Other, Scalar::Number))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }

    fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }

    /// A container is read whole, as a full parse reads it (serde's skipping checks less: numbers out of
    /// range, for one), so a time or key field holding a malformed one leaves the value unread as before.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
        while seq.next_element::<serde_json::Value>()?.is_some() {}
        Ok(Scalar::Other)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
        while map.next_entry::<String, serde_json::Value>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

/// The texts of two differently named top-level members of a JSON object, read in one pass and nothing else
/// whole: `None` for a member that is missing or not a string, both when `value` is not one JSON object. A
/// repeated member: the last one counts.
pub fn top_texts<'a>(value: &'a [u8], first: &str, second: &str) -> (Option<Cow<'a, str>>, Option<Cow<'a, str>>) {
    TopFields::read(value, Some(first), Some(second))
        .map_or((None, None), |fields| (fields.time.and_then(Scalar::into_text), fields.key))
}

/// Which of the producer's fields a member name is, compared without copying it.
#[derive(Clone, Copy)]
struct NameSeed<'a> {
    time_field: Option<&'a str>,
    key_field: Option<&'a str>,
}

enum Name {
    Time,
    Key,
    Other,
}

impl Name {
    /// Which field `name` is; a name both fields have is the time field's.
    fn of(name: &[u8], time_field: Option<&str>, key_field: Option<&str>) -> Name {
        let names = |field: Option<&str>| field.is_some_and(|field| field.as_bytes() == name);
        if names(time_field) {
            Name::Time
        } else if names(key_field) {
            Name::Key
        } else {
            Name::Other
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for NameSeed<'_> {
    type Value = Name;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Name, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for NameSeed<'_> {
    type Value = Name;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, name: &str) -> Result<Name, E> {
        Ok(Name::of(name.as_bytes(), self.time_field, self.key_field))
    }
}

/// A flat object read without serde_json. It takes members whose values are:
/// - strings without escapes or control characters (the time and key fields' must be UTF-8);
/// - `true`, `false` or `null`;
/// - numbers (the time and key fields' only unsigned integers of at most 18 digits, which serde_json reads as
///   the same `u64`).
///
/// Anything else, every malformed value included, gives `None`: serde_json then decides, so this never takes
/// what serde_json refuses.
fn read_flat<'a>(value: &'a [u8], time_field: Option<&str>, key_field: Option<&str>) -> Option<TopFields<'a>> {
    let mut reader = FlatReader { bytes: value, at: 0 };
    let mut fields = TopFields::default();
    reader.expect(b'{')?;
    if reader.peek_past_space() == Some(b'}') {
        reader.at += 1;
    } else {
        loop {
            reader.expect(b'"')?;
            let name_bytes = reader.string_body()?;
            let name = Name::of(name_bytes, time_field, key_field);
            // A name equal to a field's is UTF-8 already; any other must be, as serde_json checks names (its
            // reading of an ignored string value does not).
            if matches!(name, Name::Other) && std::str::from_utf8(name_bytes).is_err() {
                return None;
            }
            reader.expect(b':')?;
            let member = reader.value()?;
            match name {
                Name::Time => fields.time = Some(member.scalar()?),
                Name::Key => {
                    fields.key = member.scalar()?.into_text();
                    fields.others += 1;
                }
                Name::Other => fields.others += 1,
            }
            match reader.next_past_space()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
    }
    reader.peek_past_space().is_none().then_some(fields)
}

/// Where the first quote, backslash or control character of `bytes` is, read eight bytes at a time.
fn string_stop(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH_BITS: u64 = ONES << 7;
    /// The high bit of each byte of `word` below `limit` (at most 128) is set (the trick serde_json's own
    /// string scan uses). A byte's subtraction borrows from the next only when that byte is below `limit`,
    /// so a false flag only ever follows a true one: the lowest set bit is exact.
    fn below(word: u64, limit: u8) -> u64 {
        word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGH_BITS
    }
    let mut chunks = bytes.chunks_exact(8);
    for (index, chunk) in chunks.by_ref().enumerate() {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let stops =
            below(word ^ (ONES * u64::from(b'"')), 1) | below(word ^ (ONES * u64::from(b'\\')), 1) | below(word, 0x20);
        if stops != 0 {
            return Some(index * 8 + stops.trailing_zeros() as usize / 8);
        }
    }
    let tail = chunks.remainder();
    let stop = tail.iter().position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)?;
    Some(bytes.len() - tail.len() + stop)
}

/// A member's value as the flat reader found it.
enum FlatValue<'a> {
    Text(&'a [u8]),
    /// An integer without a sign, fraction or exponent.
    Unsigned(&'a [u8]),
    /// Any other number.
    Number,
    /// `true`, `false` or `null`.
    Literal,
}

impl<'a> FlatValue<'a> {
    /// The value as [`Scalar`] reads it; `None` where serde_json must decide (text that is not UTF-8, which
    /// it refuses, and numbers other than short plain integers, whose range it checks).
    fn scalar(self) -> Option<Scalar<'a>> {
        match self {
            FlatValue::Text(bytes) => std::str::from_utf8(bytes).ok().map(|text| Scalar::Text(Cow::Borrowed(text))),
            FlatValue::Unsigned(digits) if digits.len() <= 18 => {
                let number = digits.iter().fold(0u64, |number, digit| number * 10 + u64::from(digit - b'0'));
                Some(Scalar::Number(number.into()))
            }
            FlatValue::Unsigned(_) | FlatValue::Number => None,
            FlatValue::Literal => Some(Scalar::Other),
        }
    }
}

struct FlatReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> FlatReader<'a> {
    /// The next byte that is not JSON whitespace, not consumed.
    fn peek_past_space(&mut self) -> Option<u8> {
        while let Some(&byte) = self.bytes.get(self.at) {
            if !matches!(byte, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(byte);
            }
            self.at += 1;
        }
        None
    }

    fn next_past_space(&mut self) -> Option<u8> {
        let byte = self.peek_past_space()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, wanted: u8) -> Option<()> {
        (self.next_past_space()? == wanted).then_some(())
    }

    /// A string's bytes after its opening quote, up to its closing one; `None` at an escape or a control
    /// character.
    fn string_body(&mut self) -> Option<&'a [u8]> {
        let rest = &self.bytes[self.at..];
        let end = string_stop(rest)?;
        (rest[end] == b'"').then(|| {
            self.at += end + 1;
            &rest[..end]
        })
    }

    fn value(&mut self) -> Option<FlatValue<'a>> {
        match self.peek_past_space()? {
            b'"' => {
                self.at += 1;
                self.string_body().map(FlatValue::Text)
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<FlatValue<'a>> {
        self.bytes[self.at..].starts_with(word).then(|| {
            self.at += word.len();
            FlatValue::Literal
        })
    }

    /// A number in JSON's grammar: `-`, an integer without leading zeros, a fraction, an exponent.
    fn number(&mut self) -> Option<FlatValue<'a>> {
        let negative = self.eat(b'-');
        let integer = self.at;
        let digits = self.digits();
        if digits == 0 || (digits > 1 && self.bytes[integer] == b'0') {
            return None;
        }
        let mut unsigned = !negative;
        if self.eat(b'.') {
            if self.digits() == 0 {
                return None;
            }
            unsigned = false;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _sign = self.eat(b'+') || self.eat(b'-');
            if self.digits() == 0 {
                return None;
            }
            unsigned = false;
        }
        Some(if unsigned { FlatValue::Unsigned(&self.bytes[integer..self.at]) } else { FlatValue::Number })
    }

    fn eat(&mut self, wanted: u8) -> bool {
        let found = self.bytes.get(self.at) == Some(&wanted);
        self.at += usize::from(found);
        found
    }

    /// Skips ASCII digits; returns how many.
    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        self.at - start
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn top_texts_reads_two_string_members_or_none() {
        let texts = |value: &str| {
            let (end, start) = top_texts(value.as_bytes(), "window_end", "window_start");
            (end.map(Cow::into_owned), start.map(Cow::into_owned))
        };
        let both = (Some("b".to_string()), Some("a".to_string()));
        assert_eq!(texts(r#"{"window_start":"a","n":[1],"window_end":"b"}"#), both);
        assert_eq!(texts(r#"{"window_end":"x","window_start":"a","window_end":"b"}"#), both, "the last one counts");
        assert_eq!(texts(r#"{"window_start":"a","window_end":7}"#), (None, Some("a".into())), "not a string");
        assert_eq!(texts(r#"{"window_end":"b"}"#), (Some("b".into()), None));
        for not_one_object in ["[1]", r#"{"window_end":"b","window_start":"a"} {}"#, "{"] {
            assert_eq!(texts(not_one_object), (None, None), "{not_one_object}");
        }
    }

    #[test]
    fn top_fields_read_what_a_full_parse_reads() {
        fn read(value: &str) -> Option<TopFields<'_>> {
            TopFields::read(value.as_bytes(), Some("t"), Some("k"))
        }
        let fields = read(r#"{"t":"2020-01-01 00:00:00","k":"u1","x":[1,{"t":2}],"y":null}"#).unwrap();
        assert_eq!(fields.time, Some(Scalar::Text("2020-01-01 00:00:00".into())));
        assert_eq!((fields.key.as_deref(), fields.others), (Some("u1"), 3));
        // A repeated time field is no other member; the last value counts.
        let repeated = read(r#"{"t":1,"t":2}"#).unwrap();
        assert_eq!((repeated.time, repeated.others), (Some(Scalar::Number(2.into())), 0));
        assert_eq!(read(r#"{"k":7}"#).unwrap().key, None, "a key that is not a string is no key");
        assert_eq!(read(r#"{"k":"u\"1\u00e9"}"#).unwrap().key.as_deref(), Some("u\"1é"), "escapes are decoded");
        let malformed_inside_the_time = [r#"{"k":"u1","t":[1e400]}"#, r#"{"k":"u1","t":{"a":1e400}}"#];
        for not_one_object in [r#"[1,2]"#, r#""t""#, "12", "null", r#"{"t":1} {}"#, r#"{"t":"#]
            .into_iter()
            .chain(malformed_inside_the_time)
        {
            assert_eq!(read(not_one_object), None, "{not_one_object}");
        }
        // The time field's value as a full parse reads it, whatever its type.
        for time in [r#""a\tb""#, "-3", "18446744073709551615", "1.5e3", "0.1", "true", "null", "[1,[2]]", r#"{"t":1}"#]
        {
            let value = format!(r#"{{"t":{time},"k":"u"}}"#);
            let full: serde_json::Value = serde_json::from_str(time).unwrap();
            let expected = match full {
                serde_json::Value::String(text) => Scalar::Text(text.into()),
                serde_json::Value::Number(number) => Scalar::Number(number),
                _ => Scalar::Other,
            };
            assert_eq!(read(&value).unwrap().time, Some(expected), "{value}");
        }
    }

    /// What producers send and the transform writes: read without serde_json, or the speed is not there.
    #[test]
    fn events_and_rows_take_the_flat_reader() {
        let event = r#"{"timestamp": "2024-05-01 10:00:00.250", "event": "click", "user_id": "u1", "site_id": "s",
            "url": "/a?b=c", "on_site_seconds": 12, "viewed_percent": 37.5}"#;
        let fields = read_flat(event.as_bytes(), Some("timestamp"), Some("user_id")).expect("a flat event");
        assert_eq!(fields.time, Some(Scalar::Text("2024-05-01 10:00:00.250".into())));
        assert_eq!((fields.key.as_deref(), fields.others), (Some("u1"), 6));
        let epoch = read_flat(br#"{"timestamp":1714557600250,"user_id":"u1"}"#, Some("timestamp"), Some("user_id"));
        assert_eq!(epoch.and_then(|fields| fields.time), Some(Scalar::Number(1_714_557_600_250u64.into())));
        let row = r#"{"window_start":"2024-05-01 10:00:00","window_end":"2024-05-01 10:05:00","n":3,"avg":-0.5}"#;
        assert!(read_flat(row.as_bytes(), Some("window_end"), Some("window_start")).is_some());
        // Every form the flat reader takes, each read as serde_json reads it.
        let flat_objects: [&[u8]; 5] = [
            b"{}",
            b" {\n\t\"t\" : 0 , \"k\" :\"\xc3\xa9\" } \r\n",
            b"{\"t\":\"x\",\"t\":true,\"k\":\"a\",\"k\":null,\"x\":-1.5e3,\"y\":\"\xff\",\"z\":0e1}",
            b"{\"k\":123456789012345678,\"t\":false,\"\":\"abcdefghijklmnopqrstuvwxyz\"}",
            b"{\"\xc3\xa9\":-0,\"x\":12345678901234567890123,\"t\":null}",
        ];
        for json in flat_objects {
            let flat = read_flat(json, Some("t"), Some("k"));
            assert!(flat.is_some(), "{}", String::from_utf8_lossy(json));
            assert_eq!(flat, TopFields::read_full(json, Some("t"), Some("k")));
        }
    }

    /// Both readers classify names with `Name::of`, so the property test below cannot see its order.
    #[test]
    fn a_name_both_fields_have_is_the_time_field() {
        let fields = TopFields::read(br#"{"t":"a","x":1}"#, Some("t"), Some("t")).expect("an object");
        assert_eq!((fields.time, fields.key, fields.others), (Some(Scalar::Text("a".into())), None, 1));
    }

    /// Pieces of JSON, well-formed and not, that the flat reader must take or leave exactly as serde_json.
    const NAMES: &[&[u8]] = &[
        b"\"t\"",
        b"\"k\"",
        b"\"x\"",
        b"\"\"",
        "\"é\"".as_bytes(),
        b"\"a_rather_long_name\"",
        b"\"\xff\"",
        b"\"t\\u0041\"",
        b"t",
    ];
    const VALUES: &[&[u8]] = &[
        b"\"a\"",
        b"\"2020-01-01 00:00:00\"",
        b"\"\xff\xfe\"",
        b"\"a\\nb\"",
        b"\"a\x01\"",
        b"\"\"",
        b"\"open",
        "\"é\"".as_bytes(),
        b"\"abcdefghijklmnopq\"",
        b"\"0123456789abcdef\xff\"",
        b"\"abcdefghij\\n\"",
        b"\"abcdefghijklmnop\x01\"",
        b"\"a\"b",
        b"0",
        b"-0",
        b"01",
        b"12",
        b"-3",
        b"-01",
        b"1x",
        b"123456789012345678",
        b"1234567890123456789",
        b"18446744073709551616",
        b"1.5",
        b"1.",
        b".5",
        b"-",
        b"1e400",
        b"-1E-3",
        b"2e+",
        b"true",
        b"truex",
        b"tru",
        b"null",
        b"false",
        b"nul",
        b"[1]",
        b"[1e400]",
        b"{\"t\":1}",
        b"",
    ];
    /// JSON whitespace, and a form feed, which is not; none and one space are listed more than once, so they
    /// are the likeliest.
    const SPACES: &[&[u8]] = &[b"", b" ", b"\n\t\r ", b"", b" ", b"", b" ", b"\x0c"];

    /// Objects made of those pieces, most of them well-formed around their members, some with a wrong
    /// separator, a trailing comma, no end, something after the end, or one byte changed.
    fn json_ish() -> impl Strategy<Value = Vec<u8>> {
        let member = (0..NAMES.len(), 0..VALUES.len(), 0..SPACES.len(), 0..SPACES.len());
        let members = prop::collection::vec(member, 0..6);
        let end =
            prop_oneof![6 => Just(&b"}"[..]), 1 => Just(&b",}"[..]), 1 => Just(&b""[..]), 1 => Just(&b"} {}"[..])];
        let wrong_separator = prop::bool::weighted(0.1);
        let mutation = prop::option::weighted(0.2, (any::<prop::sample::Index>(), any::<u8>()));
        (members, 0..SPACES.len(), end, wrong_separator, mutation).prop_map(
            |(members, space, end, wrong_separator, mutation)| {
                let mut json = SPACES[space].to_vec();
                json.push(b'{');
                for (index, &(name, value, before, after)) in members.iter().enumerate() {
                    if index > 0 {
                        json.push(if wrong_separator && index == 1 { b';' } else { b',' });
                    }
                    let member = [SPACES[before], NAMES[name], SPACES[after], b":", SPACES[before], VALUES[value]];
                    json.extend(member.concat());
                    json.extend(SPACES[after]);
                }
                json.extend(end);
                json.extend(SPACES[space]);
                if let Some((at, byte)) = mutation {
                    let at = at.index(json.len());
                    json[at] = byte;
                }
                json
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 8192, ..ProptestConfig::default() })]

        #[test]
        fn string_stop_finds_the_first_quote_backslash_or_control_character(
            bytes in prop::collection::vec(prop_oneof![8 => 0x20u8..=0xff, 1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20], 0..40)
        ) {
            let first = bytes.iter().position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20);
            prop_assert_eq!(string_stop(&bytes), first);
        }

        #[test]
        fn the_flat_reader_takes_only_what_serde_json_takes_and_reads_it_alike(json in json_ish()) {
            // Fields apart, time only, key only, one name for both, and names that are not ASCII or empty.
            let fields = [(Some("t"), Some("k")), (None, Some("t")), (Some("x"), None), (Some("t"), Some("t")), (Some("é"), Some(""))];
            for (time_field, key_field) in fields {
                if let Some(flat) = read_flat(&json, time_field, key_field) {
                    prop_assert_eq!(Some(flat), TopFields::read_full(&json, time_field, key_field));
                }
            }
        }
    }
}
