//! A strict JSON reader that pulls named string and number members out of one object, in a single pass with no
//! recursion: deep nesting costs a counter, not stack, so hostile input cannot overflow the small stack
//! the module runs on.

use std::ops::Range;

use crate::aggregate::Number;

/// Nesting deeper than this (the top-level object is depth 1) is refused.
pub const MAX_DEPTH: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonError {
    /// Not valid JSON (with the byte offset where reading stopped).
    Syntax(usize),
    /// Valid JSON, but not an object.
    NotObject,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// The JSON type of a member that is not a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Object,
    Array,
    Number,
    Boolean,
    Null,
    String,
}

impl JsonKind {
    pub fn name(self) -> &'static str {
        match self {
            JsonKind::Object => "an object",
            JsonKind::Array => "an array",
            JsonKind::Number => "a number",
            JsonKind::Boolean => "a boolean",
            JsonKind::Null => "null",
            JsonKind::String => "a string",
        }
    }
}

/// What an object held under one wanted name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member<'a> {
    Missing,
    Text(&'a str),
    /// A number, as its JSON token (`-12`, `0.5`, `1e3`).
    Number(&'a str),
    /// A string or number (the kind) longer than the reader's limit; not kept, so huge values cost no memory.
    TooLong(JsonKind),
    Other(JsonKind),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Missing,
    Text(Range<usize>),
    Number(Range<usize>),
    TooLong(JsonKind),
    Other(JsonKind),
}

/// Reads objects and keeps the members named at construction. Reusable: buffers persist across calls.
pub struct MemberReader {
    names: Vec<String>,
    max_text_bytes: usize,
    slots: Vec<Slot>,
    /// How many members of the last object had each wanted name.
    hits: Vec<usize>,
    decoded: String,
    key: String,
    member_count: usize,
}

impl MemberReader {
    /// Keeps the string and number members under `names`, up to `max_text_bytes` each once decoded.
    pub fn new(names: Vec<String>, max_text_bytes: usize) -> Self {
        let slots = vec![Slot::Missing; names.len()];
        let hits = vec![0; names.len()];
        MemberReader { names, max_text_bytes, slots, hits, decoded: String::new(), key: String::new(), member_count: 0 }
    }

    /// Reads `input`, which must be exactly one JSON object (surrounding white space allowed).
    /// When a name repeats, the last member wins, as in Flink's JSON format.
    pub fn read(&mut self, input: &str) -> Result<(), JsonError> {
        self.slots.iter_mut().for_each(|slot| *slot = Slot::Missing);
        self.hits.iter_mut().for_each(|hits| *hits = 0);
        self.decoded.clear();
        self.member_count = 0;
        let mut cursor = Cursor { text: input, pos: 0 };
        cursor.skip_whitespace();
        if cursor.peek() != Some(b'{') {
            // Tell "valid JSON but not an object" apart from "not JSON".
            cursor.skip_value(0)?;
            cursor.expect_end()?;
            return Err(JsonError::NotObject);
        }
        cursor.pos += 1;
        cursor.skip_whitespace();
        if cursor.peek() == Some(b'}') {
            cursor.pos += 1;
            return cursor.expect_end();
        }
        // A name longer than every wanted name cannot match; one with escapes is decoded cut short.
        let longest_name = self.names.iter().map(String::len).max().unwrap_or(0);
        loop {
            let wanted = match cursor.plain_string() {
                Some(name) => self.names.iter().position(|known| known == name),
                None => {
                    self.key.clear();
                    let whole = cursor.read_string(Some((&mut self.key, longest_name + 1)))?;
                    self.names.iter().position(|known| whole && *known == self.key)
                }
            };
            cursor.skip_whitespace();
            cursor.expect(b':')?;
            cursor.skip_whitespace();
            self.member_count += 1;
            if let Some(index) = wanted {
                self.hits[index] += 1;
            }
            match wanted {
                Some(index) if matches!(cursor.peek(), Some(b'-' | b'0'..=b'9')) => {
                    let token_start = cursor.pos;
                    cursor.number()?;
                    let token = &input[token_start..cursor.pos];
                    self.slots[index] = if token.len() <= self.max_text_bytes {
                        let start = self.decoded.len();
                        self.decoded.push_str(token);
                        Slot::Number(start..self.decoded.len())
                    } else {
                        Slot::TooLong(JsonKind::Number)
                    };
                }
                Some(index) if cursor.peek() == Some(b'"') => {
                    let start = self.decoded.len();
                    let whole = cursor.read_string(Some((&mut self.decoded, self.max_text_bytes)))?;
                    self.slots[index] = if whole {
                        Slot::Text(start..self.decoded.len())
                    } else {
                        self.decoded.truncate(start);
                        Slot::TooLong(JsonKind::String)
                    };
                }
                Some(index) => self.slots[index] = Slot::Other(cursor.skip_value(1)?),
                None => {
                    cursor.skip_value(1)?;
                }
            }
            cursor.skip_whitespace();
            match cursor.next() {
                Some(b',') => cursor.skip_whitespace(),
                Some(b'}') => return cursor.expect_end(),
                _ => return Err(cursor.syntax_error()),
            }
        }
    }

    /// The member under the `index`-th wanted name, as of the last successful [`read`](Self::read).
    pub fn member(&self, index: usize) -> Member<'_> {
        match &self.slots[index] {
            Slot::Missing => Member::Missing,
            Slot::Text(range) => Member::Text(&self.decoded[range.clone()]),
            Slot::Number(range) => Member::Number(&self.decoded[range.clone()]),
            Slot::TooLong(kind) => Member::TooLong(*kind),
            Slot::Other(kind) => Member::Other(*kind),
        }
    }

    /// How many members the object had (repeated names count each time).
    pub fn member_count(&self) -> usize {
        self.member_count
    }

    /// Whether every member of the object (at least one) had the `index`-th wanted name.
    pub fn holds_only(&self, index: usize) -> bool {
        self.member_count > 0 && self.hits[index] == self.member_count
    }
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The string at the cursor, read past, if it holds no escape: its text as it is in the input.
    fn plain_string(&mut self) -> Option<&'a str> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let start = self.pos + 1;
        let end = start + plain_prefix_len(&self.bytes()[start..]);
        if self.bytes().get(end) != Some(&b'"') {
            return None;
        }
        // Both ends are at ASCII bytes, so the slice is whole characters.
        let text = self.text.get(start..end)?;
        self.pos = end + 1;
        Some(text)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn syntax_error(&self) -> JsonError {
        JsonError::Syntax(self.pos)
    }

    fn expect(&mut self, byte: u8) -> Result<(), JsonError> {
        if self.next() == Some(byte) {
            Ok(())
        } else {
            Err(JsonError::Syntax(self.pos.saturating_sub(1)))
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect_end(&mut self) -> Result<(), JsonError> {
        self.skip_whitespace();
        if self.pos == self.bytes().len() {
            Ok(())
        } else {
            Err(self.syntax_error())
        }
    }

    /// Skips one value that starts at the cursor, inside `depth` enclosing containers, and returns its type.
    /// Containers are tracked in a bit stack (1 = object), so nesting uses no call stack.
    fn skip_value(&mut self, depth: u32) -> Result<JsonKind, JsonError> {
        let mut open: u64 = 0;
        let mut level: u32 = 0;
        let mut outer_kind = None;
        loop {
            // At the start of a value.
            let kind = match self.peek() {
                Some(opening @ (b'{' | b'[')) => {
                    self.pos += 1;
                    if depth + level + 1 > MAX_DEPTH {
                        return Err(JsonError::TooDeep);
                    }
                    open = (open << 1) | u64::from(opening == b'{');
                    level += 1;
                    self.skip_whitespace();
                    let closing = if opening == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(closing) {
                        self.pos += 1;
                        open >>= 1;
                        level -= 1;
                    } else {
                        if opening == b'{' {
                            self.read_member_name()?;
                        }
                        outer_kind.get_or_insert(if opening == b'{' { JsonKind::Object } else { JsonKind::Array });
                        continue;
                    }
                    if opening == b'{' {
                        JsonKind::Object
                    } else {
                        JsonKind::Array
                    }
                }
                Some(b'"') => {
                    self.read_string(None)?;
                    JsonKind::String
                }
                Some(b't') => self.literal(b"true", JsonKind::Boolean)?,
                Some(b'f') => self.literal(b"false", JsonKind::Boolean)?,
                Some(b'n') => self.literal(b"null", JsonKind::Null)?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(self.syntax_error()),
            };
            outer_kind.get_or_insert(kind);
            // After a value: close containers or move to the next element.
            loop {
                if level == 0 {
                    return Ok(outer_kind.unwrap_or(kind));
                }
                self.skip_whitespace();
                let in_object = open & 1 == 1;
                match self.next() {
                    Some(b',') => {
                        self.skip_whitespace();
                        if in_object {
                            self.read_member_name()?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {}
                    Some(b']') if !in_object => {}
                    _ => return Err(JsonError::Syntax(self.pos.saturating_sub(1))),
                }
                open >>= 1;
                level -= 1;
            }
        }
    }

    /// Reads `"name"` and the colon after it, leaving the cursor at the member's value.
    fn read_member_name(&mut self) -> Result<(), JsonError> {
        self.read_string(None)?;
        self.skip_whitespace();
        self.expect(b':')?;
        self.skip_whitespace();
        Ok(())
    }

    fn literal(&mut self, word: &[u8], kind: JsonKind) -> Result<JsonKind, JsonError> {
        if self.bytes()[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(kind)
        } else {
            Err(self.syntax_error())
        }
    }

    fn number(&mut self) -> Result<JsonKind, JsonError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(JsonError::Syntax(self.pos.saturating_sub(1))),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.require_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.require_digits()?;
        }
        Ok(JsonKind::Number)
    }

    fn skip_digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn require_digits(&mut self) -> Result<(), JsonError> {
        let start = self.pos;
        self.skip_digits();
        if self.pos == start {
            Err(self.syntax_error())
        } else {
            Ok(())
        }
    }

    /// Reads a string at the cursor. With `out = (text, limit)` it appends the decoded string to `text`
    /// and returns false, having appended only part, when the string is longer than `limit` bytes.
    fn read_string(&mut self, mut out: Option<(&mut String, usize)>) -> Result<bool, JsonError> {
        self.expect(b'"')?;
        let mut room = out.as_ref().map_or(0, |(_, limit)| *limit);
        let mut whole = true;
        loop {
            let run_start = self.pos;
            self.pos += plain_prefix_len(&self.bytes()[run_start..]);
            if let Some((text, _)) = out.as_mut().filter(|_| whole) {
                // The input is a `str` and the run stops only at ASCII bytes, so the slice is whole characters.
                let run = self.text.get(run_start..self.pos).ok_or_else(|| self.syntax_error())?;
                whole = run.len() <= room;
                if whole {
                    text.push_str(run);
                    room -= run.len();
                }
            }
            match self.next() {
                Some(b'"') => return Ok(whole),
                Some(b'\\') => {
                    let decoded = self.escape()?;
                    if let Some((text, _)) = out.as_mut().filter(|_| whole) {
                        whole = decoded.len_utf8() <= room;
                        if whole {
                            text.push(decoded);
                            room -= decoded.len_utf8();
                        }
                    }
                }
                _ => return Err(JsonError::Syntax(self.pos.saturating_sub(1))),
            }
        }
    }

    fn escape(&mut self) -> Result<char, JsonError> {
        Ok(match self.next() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let unit = self.hex4()?;
                let code = match unit {
                    0xD800..=0xDBFF => {
                        self.expect(b'\\')?;
                        self.expect(b'u')?;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(self.syntax_error());
                        }
                        0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(self.syntax_error()),
                    _ => unit,
                };
                char::from_u32(code).ok_or_else(|| self.syntax_error())?
            }
            _ => return Err(JsonError::Syntax(self.pos.saturating_sub(1))),
        })
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self.bytes().get(self.pos..self.pos + 4).ok_or_else(|| self.syntax_error())?;
        let text = std::str::from_utf8(digits).map_err(|_| self.syntax_error())?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.syntax_error());
        }
        self.pos += 4;
        u32::from_str_radix(text, 16).map_err(|_| self.syntax_error())
    }
}

/// Writes a number as a row holds it: an integer in decimal, a float as [`write_float`] does.
#[inline]
pub(crate) fn write_number(out: &mut String, number: Number) {
    match number {
        Number::Int(int) => write_int(out, int),
        Number::Float(float) => write_float(out, float),
    }
}

/// Writes a float as Rust's `{:?}` does: the shortest text that reads back to it, always with a fraction or
/// an exponent (`99.0`, `0.1`, `1e16`, `1e-5`), so a float never reads back as an integer. `avg` writes a
/// float in every row, so the common cases are quicker: a whole float below 1e16 as its integer, other floats
/// between 1e-4 and 1e16, where both write plain decimals, by `ryu`; outside that, `ryu` would write `1e-5` as
/// `0.00001`, so Rust's writer does. The one difference: when the float lies halfway between two shortest
/// texts, `ryu` takes the even last digit (as Java's `Double.toString` does since JDK 19), where Rust rounds up.
#[inline(never)] // so `write_number`'s integer path, the common one, stays small enough to inline
pub(crate) fn write_float(out: &mut String, float: f64) {
    let size = float.abs();
    if size < 1e16 && size.fract() == 0.0 {
        // Whole floats are common (an `avg` of equal integers): written as the integer they hold, and `.0`.
        if float.is_sign_negative() {
            out.push('-');
        }
        write_int(out, size as i64);
        out.push_str(".0");
    } else if (1e-4..1e16).contains(&size) {
        out.push_str(ryu::Buffer::new().format_finite(float));
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{float:?}");
    }
}

/// Writes an integer in decimal without the formatting machinery (rows are mostly integers).
pub(crate) fn write_int(out: &mut String, int: i64) {
    // "00" to "99": two digits per division, pushed as text (no character-by-character pushes, no UTF-8 check).
    const PAIRS: &str = "00010203040506070809101112131415161718192021222324\
        25262728293031323334353637383940414243444546474849\
        50515253545556575859606162636465666768697071727374\
        75767778798081828384858687888990919293949596979899";
    let pair = |pair: u64| &PAIRS[2 * pair as usize..2 * pair as usize + 2];
    if int < 0 {
        out.push('-');
    }
    let mut rest = int.unsigned_abs();
    // The last pairs first; `i64::MIN` has 19 digits.
    let mut low_pairs = [0u8; 9];
    let mut count = 0;
    while rest >= 100 {
        low_pairs[count] = (rest % 100) as u8;
        rest /= 100;
        count += 1;
    }
    // The leading one or two digits, without a leading zero.
    out.push_str(if rest < 10 { &pair(rest)[1..] } else { pair(rest) });
    for &low in low_pairs[..count].iter().rev() {
        out.push_str(pair(u64::from(low)));
    }
}

fn escaped(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// How many bytes `bytes` starts with that a JSON string holds as they are (none [`escaped`]). Eight bytes
/// are tested at a time: a byte equal to `b` is a zero byte of `word ^ (ONES * b)`, and the lowest byte the
/// zero-byte and less-than tests flag is exact (a false flag can only follow a true one).
fn plain_prefix_len(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = ONES * 0x80;
    let below = |word: u64, limit: u8| word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGHS;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let flagged =
            below(word ^ (ONES * u64::from(b'"')), 1) | below(word ^ (ONES * u64::from(b'\\')), 1) | below(word, 0x20);
        if flagged != 0 {
            return at + (flagged.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + bytes[at..].iter().position(|&byte| escaped(byte)).unwrap_or(bytes.len() - at)
}

/// Whether [`write_string`] escapes any character of `text`.
pub(crate) fn needs_escape(text: &str) -> bool {
    plain_prefix_len(text.as_bytes()) < text.len()
}

/// Writes `text` as a JSON string: quoted, with quotes, backslashes and control characters escaped.
pub(crate) fn write_string(out: &mut String, text: &str) {
    use std::fmt::Write;
    out.push('"');
    let mut rest = text;
    // Runs of characters that need no escape are copied whole.
    loop {
        let at = plain_prefix_len(rest.as_bytes());
        out.push_str(&rest[..at]);
        let Some(&byte) = rest.as_bytes().get(at) else { break };
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            control => {
                let _ = write!(out, "\\u{:04x}", control);
            }
        }
        rest = &rest[at + 1..];
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value at every position of the first two words and the tail, and runs that end in none.
    #[test]
    fn plain_prefixes_end_at_the_first_byte_a_json_string_escapes() {
        let naive = |bytes: &[u8]| bytes.iter().position(|&byte| escaped(byte)).unwrap_or(bytes.len());
        for len in 0..20 {
            for at in 0..len {
                for byte in 0..=u8::MAX {
                    // Bytes that sit next to the special ones in value, around the tested byte.
                    let mut bytes: Vec<u8> =
                        (0..len).map(|i| [b'!', b'#', b'[', b']', 0x20, 0x7f, 0x80, 0xff][i % 8]).collect();
                    bytes[at] = byte;
                    assert_eq!(plain_prefix_len(&bytes), naive(&bytes), "{bytes:?}");
                    if let Some(after) = bytes.get_mut(at + 1) {
                        *after = b'"';
                    }
                    assert_eq!(plain_prefix_len(&bytes), naive(&bytes), "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn integers_are_written_as_rust_writes_them() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let samples = (0..1_000).map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed as i64) >> (seed % 64)
        });
        for int in [0, 1, -1, 9, 10, -10, 99, 100, i64::MIN, i64::MAX, i64::MIN + 1].into_iter().chain(samples) {
            let mut out = String::from("x");
            write_int(&mut out, int);
            assert_eq!(out, format!("x{int}"));
        }
    }

    #[test]
    fn floats_are_written_as_rust_debug_writes_them_but_ties_go_to_even() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // Any bit pattern; the ratios an `avg` of integers makes; decimals of a few digits at any scale; whole
        // floats.
        let samples = (0..200_000).flat_map(|_| {
            let numerator = (next() % 1_000_000) as f64 - 500_000.0;
            [
                f64::from_bits(next()),
                numerator / (next() % 1_000 + 1) as f64,
                numerator / 10f64.powi((next() % 24) as i32 - 8),
                numerator,
                ((next() as i64) >> (next() % 64)) as f64,
            ]
        });
        let edges = [0.0, -0.0, -1.0, 1e-4, 1e-4f64.next_down(), 1e-5, 1e16, 1e16f64.next_down(), 1e15, 0.1, 5e-324];
        let (mut checked, mut ties) = (0, 0);
        for float in samples.chain(edges).chain([f64::MIN_POSITIVE, f64::MAX, f64::MIN]).filter(|f| f.is_finite()) {
            let mut out = String::new();
            write_float(&mut out, float);
            let debug = format!("{float:?}");
            if out != debug {
                // A tie: the float lies halfway between two shortest texts, and Rust rounds half up.
                let (ours, theirs) = (out.as_bytes(), debug.as_bytes());
                let last = ours.len() - 1;
                assert!(ours.len() == theirs.len() && ours[..last] == theirs[..last], "{out} vs {debug}");
                assert!(ours[last] % 2 == 0 && ours[last].abs_diff(theirs[last]) == 1, "{out} vs {debug}");
                ties += 1;
            }
            assert_eq!(out.parse::<f64>().map(f64::to_bits), Ok(float.to_bits()), "{out}");
            checked += 1;
        }
        assert!(checked > 550_000 && ties > 0 && ties * 1_000 < checked, "{ties} ties in {checked}");
    }

    #[test]
    fn escapes_control_characters_and_quotes_in_output() {
        let mut out = String::new();
        write_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        assert!(needs_escape("a\u{1f}") && !needs_escape("plain é"));
    }

    fn reader() -> MemberReader {
        MemberReader::new(vec!["timestamp".into(), "user_id".into()], 20)
    }

    #[test]
    fn picks_named_string_members() {
        let mut reader = reader();
        reader
            .read(r#"{"timestamp": "2020-11-16 22:59:59", "event": "view", "user_id": "u\u00e9\n", "n": [1, {"x": null}]}"#)
            .unwrap();
        assert_eq!(reader.member(0), Member::Text("2020-11-16 22:59:59"));
        assert_eq!(reader.member(1), Member::Text("ué\n"));
        assert_eq!(reader.member_count(), 4);
    }

    /// Regression (a name with escapes, decoded only as far as the longest wanted name and one more byte,
    /// was compared cut short: `user_i\u0064_and_more` read as `user_id`).
    #[test]
    fn names_match_whole_whether_written_plain_or_escaped() {
        let mut reader = reader();
        reader.read(r#"{"user_i\u0064": "escaped", "timestamp_and_more": "t", "user_i\u0064_and_more": "x"}"#).unwrap();
        assert_eq!((reader.member(0), reader.member(1)), (Member::Missing, Member::Text("escaped")));
        reader.read(r#"{"user_i\u0064_and_more": "x", "user_idx": "y", "user_i": "z"}"#).unwrap();
        assert_eq!(reader.member(1), Member::Missing);
    }

    #[test]
    fn reports_missing_and_non_string_members() {
        let mut reader = reader();
        reader.read(r#"{"user_id": 42}"#).unwrap();
        assert_eq!(reader.member(0), Member::Missing);
        assert_eq!(reader.member(1), Member::Number("42"));
        reader.read(r#"{"user_id": -0.5e+3, "timestamp": 1667158800000}"#).unwrap();
        assert_eq!((reader.member(0), reader.member(1)), (Member::Number("1667158800000"), Member::Number("-0.5e+3")));
        reader.read(&format!(r#"{{"user_id": 1{}}}"#, "0".repeat(20))).unwrap();
        assert_eq!(reader.member(1), Member::TooLong(JsonKind::Number), "number tokens obey the length limit too");
        for (text, kind) in [
            ("{\"user_id\": {}}", JsonKind::Object),
            ("{\"user_id\": [1]}", JsonKind::Array),
            ("{\"user_id\": true}", JsonKind::Boolean),
            ("{\"user_id\": null}", JsonKind::Null),
        ] {
            reader.read(text).unwrap();
            assert_eq!(reader.member(1), Member::Other(kind), "{text}");
        }
    }

    #[test]
    fn the_last_repeated_member_wins_and_old_values_are_forgotten() {
        let mut reader = reader();
        reader.read(r#"{"user_id": "a", "user_id": "b"}"#).unwrap();
        assert_eq!(reader.member(1), Member::Text("b"));
        assert!(reader.holds_only(1) && !reader.holds_only(0));
        reader.read(r#"{"timestamp": "t", "timestamp": "u"}"#).unwrap();
        assert!(reader.holds_only(0), "a repeated name is still the only name");
        reader.read(r#"{"timestamp": "t", "x": 1}"#).unwrap();
        assert!(!reader.holds_only(0));
        reader.read("{}").unwrap();
        assert!(!reader.holds_only(0));
        reader.read(r#"{"timestamp": "t"}"#).unwrap();
        assert_eq!(reader.member(1), Member::Missing);
    }

    #[test]
    fn strings_over_the_limit_are_not_kept() {
        let mut reader = reader();
        reader.read(r#"{"timestamp": "0123456789abcdefghij", "user_id": "0123456789abcdefghijk"}"#).unwrap();
        assert_eq!(reader.member(0), Member::Text("0123456789abcdefghij"));
        assert_eq!(reader.member(1), Member::TooLong(JsonKind::String));
        reader.read(r#"{"user_id": "0123456789abcdefghi\u00e9"}"#).unwrap();
        assert_eq!(reader.member(1), Member::TooLong(JsonKind::String), "the escape pushes it to 21 bytes");
        // A long name that starts like a wanted one does not match it.
        reader.read(r#"{"user_id_but_longer": "x", "timestampXXXXXXXXXXXXXXX": "y"}"#).unwrap();
        assert_eq!((reader.member(0), reader.member(1)), (Member::Missing, Member::Missing));
        let huge = format!(r#"{{"user_id": "{}"}}"#, "x".repeat(1 << 20));
        reader.read(&huge).unwrap();
        assert_eq!(reader.member(1), Member::TooLong(JsonKind::String));
    }

    #[test]
    fn decodes_surrogate_pairs() {
        let mut reader = reader();
        reader.read(r#"{"user_id": "\ud83d\ude00"}"#).unwrap();
        assert_eq!(reader.member(1), Member::Text("😀"));
    }

    #[test]
    fn tells_not_an_object_from_not_json() {
        let mut reader = reader();
        for text in ["[]", "1", "\"s\"", "null", " [1, {\"a\": [true]}] "] {
            assert_eq!(reader.read(text), Err(JsonError::NotObject), "{text}");
        }
        for text in [
            "",
            "{",
            "}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":1} x",
            "[1,]",
            "{'a':1}",
            "{\"a\":NaN}",
            "{\"a\":Infinity}",
            "{\"a\":-}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":1e}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":\"\\udc00\"}",
            "{\"a\":\"tab\there\"}",
            "{\"a\":tru}",
            "{\"a\":[1 2]}",
            "{\"a\":{\"b\":1]}",
            "{\"a\":[1}",
            "{\"a\":\"\\u12\"}",
            "{\"a\" 1}",
            "nul",
        ] {
            assert!(matches!(reader.read(text), Err(JsonError::Syntax(_))), "{text:?}");
        }
    }

    #[test]
    fn accepts_every_value_form() {
        let mut reader = reader();
        let text = r#" { "a" : [ ] , "b" : { } , "c" : [ -0.5e+3 , 1E-2 , 0 , "x" , [ [ ] ] , { "d" : false } ] } "#;
        reader.read(text).unwrap();
        assert_eq!(reader.member_count(), 3);
        reader.read("{}").unwrap();
        assert_eq!(reader.member_count(), 0);
    }

    #[test]
    fn refuses_nesting_deeper_than_the_limit() {
        let mut reader = reader();
        let nested =
            |depth: u32| format!("{{\"a\":{}1{}}}", "[".repeat(depth as usize - 1), "]".repeat(depth as usize - 1));
        assert_eq!(reader.read(&nested(MAX_DEPTH)), Ok(()));
        assert_eq!(reader.read(&nested(MAX_DEPTH + 1)), Err(JsonError::TooDeep));
        let hostile = "[".repeat(1_000_000);
        assert_eq!(reader.read(&hostile), Err(JsonError::TooDeep));
    }
}
