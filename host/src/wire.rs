//! The byte formats that cross the transform ABI: zigzag varints, record payloads and write options.

/// One Kafka record header; a null value is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The part of a Kafka record that crosses the ABI: key, value and headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

impl Payload {
    /// The value of the first header named `key`; `None` if absent or null.
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers.iter().find(|header| header.key == key.as_bytes())?.value.as_deref()
    }
}

pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (zigzag & 0x7f) as u8;
        zigzag >>= 7;
        if zigzag == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_sized(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            put_varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
        None => put_varint(out, -1),
    }
}

/// Encodes as Kafka stores it, from `keyLength` on.
pub fn encode_payload(payload: &Payload) -> Vec<u8> {
    // Sized once: a length below 16 GiB takes at most 5 varint bytes (a longer one only makes it grow).
    let len = |bytes: Option<&[u8]>| bytes.map_or(0, <[u8]>::len) + 5;
    let headers: usize = payload.headers.iter().map(|h| len(Some(&h.key)) + len(h.value.as_deref())).sum();
    let mut out = Vec::with_capacity(len(payload.key.as_deref()) + len(payload.value.as_deref()) + 5 + headers);
    put_sized(&mut out, payload.key.as_deref());
    put_sized(&mut out, payload.value.as_deref());
    put_varint(&mut out, payload.headers.len() as i64);
    for header in &payload.headers {
        put_sized(&mut out, Some(&header.key));
        put_sized(&mut out, header.value.as_deref());
    }
    out
}

/// Reads varints and sized byte strings from a buffer.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    pub(crate) fn varint(&mut self) -> Option<i64> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self.bytes.get(self.pos)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                return Some((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        None
    }

    /// A length-prefixed byte string, borrowed from the buffer; `Some(None)` for length −1.
    pub(crate) fn sized_ref(&mut self) -> Option<Option<&'a [u8]>> {
        match self.varint()? {
            -1 => Some(None),
            len if len >= 0 => {
                let end = self.pos.checked_add(usize::try_from(len).ok()?)?;
                let bytes = self.bytes.get(self.pos..end)?;
                self.pos = end;
                Some(Some(bytes))
            }
            _ => None,
        }
    }
}

/// A payload in wire form, validated and read in place (no copy of its key, value or headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadView<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The encoded headers, each a sized key then a sized value.
    headers: &'a [u8],
}

impl<'a> PayloadView<'a> {
    /// Reads a payload as a Kafka client reads the record it becomes: lengths ≥ −1, a header count ≥ 0,
    /// everything inside the buffer and nothing after it. Stricter than the broker's check on writes,
    /// which lets some payloads cut short through (`transform_abi::broker_takes_payload`).
    pub fn parse(bytes: &'a [u8]) -> Option<PayloadView<'a>> {
        let mut reader = Reader::new(bytes);
        let key = reader.sized_ref()?;
        let value = reader.sized_ref()?;
        let count = reader.varint()?;
        if count < 0 {
            return None;
        }
        let headers_start = reader.pos;
        for _ in 0..count {
            reader.sized_ref()?;
            reader.sized_ref()?;
        }
        reader.at_end().then_some(PayloadView { key, value, headers: &bytes[headers_start..] })
    }

    /// The headers in order: key (a null key reads as empty) and value.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> {
        let mut reader = Reader::new(self.headers);
        std::iter::from_fn(move || {
            if reader.at_end() {
                return None;
            }
            let key = reader.sized_ref().expect("validated by parse").unwrap_or_default();
            Some((key, reader.sized_ref().expect("validated by parse")))
        })
    }

    /// The value of the first header named `key`; `None` if absent or null.
    pub fn header(&self, key: &str) -> Option<&'a [u8]> {
        self.headers().find(|(name, _)| *name == key.as_bytes())?.1
    }

    pub fn to_payload(&self) -> Payload {
        Payload {
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self
                .headers()
                .map(|(key, value)| Header { key: key.to_vec(), value: value.map(<[u8]>::to_vec) })
                .collect(),
        }
    }
}

/// Decodes and validates a payload (see [`PayloadView::parse`]) into owned bytes.
pub fn decode_payload(bytes: &[u8]) -> Option<Payload> {
    PayloadView::parse(bytes).map(|view| view.to_payload())
}

/// Reads a buffer as the broker's readers do (`ffi::reader` in `ffi.cc`, `iobuf_parser`): varints as
/// `vint::deserialize` reads them (`utils/vint.h`), which never fails: it stops after ten bytes, and a varint
/// cut off by the end of the buffer is the bits read so far (nothing at all reads as 0).
pub(crate) struct BrokerReader<'a> {
    rest: &'a [u8],
}

impl<'a> BrokerReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> BrokerReader<'a> {
        BrokerReader { rest: bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// A zigzag varint.
    pub(crate) fn varint(&mut self) -> i64 {
        let mut value = 0u64;
        let mut read = 0;
        for (index, &byte) in self.rest.iter().take(10).enumerate() {
            // At the tenth byte only the lowest bit still fits, as in the broker's 64-bit shift.
            value |= u64::from(byte & 0x7f) << (7 * index);
            read = index + 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        self.rest = &self.rest[read..];
        (value >> 1) as i64 ^ -((value & 1) as i64)
    }

    /// The next `len` bytes; `None` where the broker's reader throws `std::out_of_range`: fewer are left,
    /// or the length is negative (a huge `size_t` there).
    pub(crate) fn bytes(&mut self, len: i64) -> Option<&'a [u8]> {
        let len = usize::try_from(len).ok().filter(|&len| len <= self.rest.len())?;
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(taken)
    }

    /// A varint length, then that many bytes.
    pub(crate) fn sized(&mut self) -> Option<&'a [u8]> {
        let len = self.varint();
        self.bytes(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_the_sdk_does() {
        let payload = Payload {
            key: Some(b"k1".to_vec()),
            value: Some(b"v1".to_vec()),
            headers: vec![
                Header { key: b"h".to_vec(), value: Some(b"x".to_vec()) },
                Header { key: b"n".to_vec(), value: None },
            ],
        };
        let bytes = encode_payload(&payload);
        assert_eq!(bytes, [4, b'k', b'1', 4, b'v', b'1', 4, 2, b'h', 2, b'x', 2, b'n', 1]);
        assert_eq!(decode_payload(&bytes), Some(payload));
        let empty = Payload { key: None, value: Some(Vec::new()), headers: Vec::new() };
        assert_eq!(encode_payload(&empty), [1, 0, 0]);
    }

    #[test]
    fn varints_round_trip_at_the_extremes() {
        for value in [0, 1, -1, 63, -64, 64, 300, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(Reader::new(&out).varint(), Some(value), "{value}");
        }
    }

    #[test]
    fn refuses_what_the_broker_refuses() {
        assert_eq!(decode_payload(&[1, 1, 0, 0]), None, "trailing byte");
        assert_eq!(decode_payload(&[3, 0, 0]), None, "length -2");
        assert_eq!(decode_payload(&[10, b'a']), None, "past the end");
        assert_eq!(decode_payload(&[1, 1, 1]), None, "negative header count");
        assert_eq!(decode_payload(&[0x80]), None, "cut varint");
    }
}
