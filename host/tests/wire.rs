//! Record payloads in wire form, as the harness encodes and reads them.

use proptest::prelude::*;
use transform_host::wire::{decode_payload, encode_payload, Header, Payload, PayloadView};

fn bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop::collection::vec(any::<u8>(), 0..300))
}

proptest! {
    /// Any payload the harness encodes reads back the same, in place and owned; every strict prefix of
    /// it is refused, and so is anything after it (the broker takes some prefixes, see
    /// `written_payloads_are_checked_as_the_broker_checks_them`; no consumer can read those).
    #[test]
    fn payloads_read_back_as_written(
        key in bytes(),
        value in bytes(),
        headers in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..20), bytes()), 0..5),
    ) {
        let headers = headers.into_iter().map(|(key, value)| Header { key, value }).collect();
        let payload = Payload { key, value, headers };
        let encoded = encode_payload(&payload);
        let view = PayloadView::parse(&encoded).expect("an encoded payload parses");
        prop_assert_eq!(view.key, payload.key.as_deref());
        prop_assert_eq!(view.value, payload.value.as_deref());
        prop_assert_eq!(view.headers().count(), payload.headers.len());
        prop_assert_eq!(decode_payload(&encoded), Some(payload));
        for cut in 0..encoded.len() {
            prop_assert!(PayloadView::parse(&encoded[..cut]).is_none(), "prefix of {} bytes", cut);
        }
        let mut longer = encoded.clone();
        longer.push(0);
        prop_assert!(PayloadView::parse(&longer).is_none());
    }
}
