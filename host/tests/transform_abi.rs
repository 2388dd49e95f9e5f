//! The transform ABI (`redpanda_transform`) as the broker implements it (`wasm/transform_module.cc`):
//! reads, writes and their options, payload checks and pointer bounds.

mod common;

use common::*;
use transform_host::{Limits, Vm};

#[test]
fn writing_to_a_topic_that_is_not_an_output_gets_minus_3() {
    // payload: null key, value "x", no headers; options: 0x01, sized "nope"
    let extra = data(&[1, 2, b'x', 0, 1, 8, b'n', b'o', b'p', b'e']);
    let action =
        "(i64.extend_i32_s (call $write_with_options (i32.const 256) (i32.const 4) (i32.const 260) (i32.const 6)))";
    assert_eq!(result_with_extra(&extra, action), -3);
}

#[test]
fn writing_to_a_declared_topic_by_name_succeeds() {
    let extra = data(&[1, 2, b'x', 0, 1, 8, b's', b'i', b'd', b'e']);
    let action =
        "(i64.extend_i32_s (call $write_with_options (i32.const 256) (i32.const 4) (i32.const 260) (i32.const 6)))";
    let module = load(&guest("", action, &extra), Limits::default()).unwrap();
    let (mut vm, _) = Vm::start(&module, &meta()).unwrap();
    let output = vm.transform(batch(&[0])).unwrap();
    let records: Vec<_> = output.records().collect();
    assert_eq!(records[0].0, 1);
    assert_eq!(records[0].1.value, Some(&b"x"[..]));
    assert_eq!(records[1].1.value, Some(&4i64.to_le_bytes()[..]), "returns the length");
}

#[test]
fn malformed_payloads_and_options_get_minus_2() {
    let extra = data(&[1, 2, b'x', 0, 0xAA, 2, 1, 8, b's']);
    // A trailing byte after the headers.
    assert_eq!(result_with_extra(&extra, "(i64.extend_i32_s (call $write_record (i32.const 256) (i32.const 5)))"), -2);
    // A value length past the end of the buffer.
    assert_eq!(result_with_extra(&extra, "(i64.extend_i32_s (call $write_record (i32.const 256) (i32.const 2)))"), -2);
    // Options that do not start with 0x01.
    let bad_key =
        "(i64.extend_i32_s (call $write_with_options (i32.const 256) (i32.const 4) (i32.const 261) (i32.const 2)))";
    assert_eq!(result_with_extra(&extra, bad_key), -2);
}

/// The broker reads the topic name's length and throws when it runs past the options: a trap, not −2.
#[test]
fn write_options_whose_topic_length_runs_past_them_trap() {
    let extra = data(&[1, 2, b'x', 0, 1, 8, b's']);
    let cut =
        "(i64.extend_i32_s (call $write_with_options (i32.const 256) (i32.const 4) (i32.const 260) (i32.const 3)))";
    let failure = results(&guest("", cut, &extra), Limits::default(), &[0]).unwrap_err();
    assert!(failure.reason.contains("runs past the write options"), "{failure}");
}

/// The broker reads the options' varints as `vint::deserialize` does (ffi.cc, `reader::read_varint`;
/// utils/vint.h): a varint cut off by the end of the options is the bits read so far, and one of ten
/// bytes with the continuation bit set ends there. So a cut length of 0 is the empty name (−3), a cut
/// length past the options traps, and a ten-byte varint followed by more is −2 (bytes after the name).
#[test]
fn write_option_varints_are_read_as_the_broker_reads_them() {
    // Payload: null key, value "x", no headers; options: 0x01, then eleven bytes 0x80.
    let extra = data(&[&[1, 2, b'x', 0, 1][..], &[0x80; 11]].concat());
    let write = |options_at: u32, len: u32| {
        format!(
            "(i64.extend_i32_s
               (call $write_with_options (i32.const 256) (i32.const 4) (i32.const {options_at}) (i32.const {len})))"
        )
    };
    assert_eq!(result_with_extra(&extra, &write(260, 2)), -3, "01 80: a cut length reads as 0");
    assert_eq!(result_with_extra(&extra, &write(260, 11)), -3, "01, ten 80s: read as 0, nothing left");
    assert_eq!(result_with_extra(&extra, &write(260, 12)), -2, "01, eleven 80s: ten read as 0, one left over");
    let cut_past = data(&[1, 2, b'x', 0, 1, 0x82]);
    let failure = results(&guest("", &write(260, 2), &cut_past), Limits::default(), &[0]).unwrap_err();
    assert!(failure.reason.contains("runs past the write options"), "01 82: a cut length of 1: {failure}");
}

/// A bare 0x01 reads as the empty topic name, and a name that is not UTF-8 is just bytes: neither is an
/// output topic, so both get −3.
#[test]
fn a_bare_topic_key_and_a_non_utf8_name_get_minus_3() {
    let extra = data(&[1, 2, b'x', 0, 1, 2, 0xff]);
    let bare =
        "(i64.extend_i32_s (call $write_with_options (i32.const 256) (i32.const 4) (i32.const 260) (i32.const 1)))";
    assert_eq!(result_with_extra(&extra, bare), -3);
    let bytes =
        "(i64.extend_i32_s (call $write_with_options (i32.const 256) (i32.const 4) (i32.const 260) (i32.const 3)))";
    assert_eq!(result_with_extra(&extra, bytes), -3);
}

/// The broker checks a written payload with `validate_record_payload` (model/transform.cc): lengths of at
/// least −1, a header count of at least 0, everything inside the buffer and nothing after it; its varints
/// are read as `vint::deserialize` reads them, so one cut off by the end of the payload is the bits read so
/// far (an absent one is 0) and one stops after ten bytes. What passes is written as it is; the rest is −2.
#[test]
fn written_payloads_are_checked_as_the_broker_checks_them() {
    let payloads: [(&[u8], i32); 8] = [
        (&[], 0),                  // key, value and header count all absent: read as 0
        (&[1, 1], 2),              // null key and value, the header count absent
        (&[1, 2, b'x', 0x80], 4),  // the header count cut off: 0
        (&[0x80; 10], 10),         // a ten-byte key length of 0, then nothing
        (&[3], -2),                // key length −2
        (&[1, 1, 1], -2),          // header count −1
        (&[1, 0x84], -2),          // a cut value length of 2, past the end
        (&[1, 2, b'x', 0, 0], -2), // a byte after the headers
    ];
    let mut bytes = Vec::new();
    let mut writes = Vec::new();
    for (payload, _) in payloads {
        writes.push(format!("(call $write_record (i32.const {}) (i32.const {}))", 256 + bytes.len(), payload.len()));
        bytes.extend_from_slice(payload);
    }
    let exprs: Vec<&str> = writes.iter().map(String::as_str).collect();
    let output = output(&report(&exprs), &data(&bytes));
    let accepted: Vec<&[u8]> = payloads.iter().filter(|(_, code)| *code >= 0).map(|(payload, _)| *payload).collect();
    assert_eq!(output.written.len(), accepted.len() + 2, "the accepted ones, the report and the loop's record");
    let report = &output.written[accepted.len()];
    let values = transform_host::wire::PayloadView::parse(output.payload(report)).unwrap().value.unwrap();
    let codes: Vec<i32> = values.chunks_exact(4).map(|chunk| i32::from_le_bytes(chunk.try_into().unwrap())).collect();
    assert_eq!(codes, payloads.map(|(_, code)| code));
    for (written, payload) in output.written.iter().zip(accepted) {
        assert_eq!(output.payload(written), payload, "written as it is");
    }
}

/// Pointer arguments are bounds-checked before anything else: out of memory traps even before the first
/// batch, where a valid write gets −1.
#[test]
fn a_write_out_of_memory_traps_even_before_the_first_batch() {
    let setup = "(drop (call $write_record (i32.const 200000) (i32.const 4)))";
    let failure = results(&guest(setup, "(i64.const 0)", ""), Limits::default(), &[0]).unwrap_err();
    assert!(failure.reason.contains("Out of bounds memory access"), "{failure}");
}

#[test]
fn writing_before_the_first_batch_gets_minus_1() {
    let extra = data(&[1, 2, b'x', 0]);
    let setup =
        "(global.set $before_first_batch (i64.extend_i32_s (call $write_record (i32.const 256) (i32.const 4))))";
    let values = results(&guest(setup, "(global.get $before_first_batch)", &extra), Limits::default(), &[0]).unwrap();
    assert_eq!(values, [-1]);
}

#[test]
fn a_buffer_too_small_gets_minus_2_and_the_record_is_not_consumed() {
    let action = "(local $first i32)
        (local.set $first (call $read_next_record (i32.const 64) (i32.const 72) (i32.const 80) (i32.const 4096) (i32.const 1)))
        (i64.or (i64.shl (i64.extend_i32_s (local.get $first)) (i64.const 32))
                (i64.extend_i32_u (call $read_next_record (i32.const 64) (i32.const 72) (i32.const 80) (i32.const 4096) (i32.const 100))))";
    // The loop already read record 1 of 2; the action then tries the second one with 1 byte, then 100.
    let values = results(&guest("", action, ""), Limits::default(), &[0, 0]).unwrap();
    assert_eq!(values[0] >> 32, -2);
    assert_eq!(values[0] & 0xffff_ffff, 5, "the 5-byte payload, read whole on the retry");
}

/// Before any batch `read_next_record` answers −1, but an out-of-bounds pointer traps (ffi.h, `extract_parameters`).
#[test]
fn read_next_record_before_the_first_batch_answers_minus_1_or_traps_out_of_bounds() {
    let call = |buf: i32| {
        format!("(call $read_next_record (i32.const 64) (i32.const 72) (i32.const 80) (i32.const {buf}) (i32.const 1))")
    };
    // The buffer's one byte is the last byte of memory.
    let setup = format!("(global.set $before_first_batch (i64.extend_i32_s {}))", call(131_071));
    let values = results(&guest(&setup, "(global.get $before_first_batch)", ""), Limits::default(), &[0]).unwrap();
    assert_eq!(values, [-1]);
    // One byte further: past the end.
    let setup = format!("(drop {})", call(131_072));
    let module = load(&guest(&setup, "(i64.const 0)", ""), Limits::default()).unwrap();
    let failure = Vm::start(&module, &meta()).err().expect("the VM fails to start");
    assert!(failure.reason.contains("Out of bounds memory access"), "{failure}");
    assert_eq!(failure.record, None, "no batch yet");
}

/// `read_batch_header`'s out-pointers are checked before it waits for a batch (ffi.h, `extract_parameters`).
#[test]
fn read_batch_header_with_an_out_pointer_outside_memory_traps_before_any_batch() {
    // The last out-parameter (base sequence, 4 bytes) at `at`.
    let start = |at: i32| {
        let setup = format!(
            "(drop (call $read_batch_header (i32.const 0) (i32.const 8) (i32.const 12) (i32.const 16) (i32.const 20)
                                            (i32.const 24) (i32.const 32) (i32.const 40) (i32.const 48) (i32.const {at})))"
        );
        Vm::start(&load(&guest(&setup, "(i64.const 0)", ""), Limits::default()).unwrap(), &meta())
    };
    assert!(start(131_068).is_ok(), "ends at the end of memory: the guest waits for a batch");
    let failure = start(131_069).err().expect("the VM fails to start");
    assert!(failure.reason.contains("Out of bounds memory access"), "{failure}");
    assert_eq!(failure.record, None);
}

// ---- Record payloads ----

/// A header key of length −1 passes the broker's payload check (model/transform.cc, `validate_kv`: −1 is valid).
#[test]
fn a_header_key_of_length_minus_1_is_accepted_and_kept_as_written() {
    // Key null, value "x", one header: key length −1 (zigzag 0x01), value "v".
    let payload = [1, 2, b'x', 2, 1, 2, b'v'];
    let output = output("(i64.extend_i32_s (call $write_record (i32.const 256) (i32.const 7)))", &data(&payload));
    assert_eq!(output.written.len(), 2);
    assert_eq!(&output.bytes[..7], &payload, "the bytes as written, the null key's length included");
    let records: Vec<_> = output.records().collect();
    assert_eq!(records[0].1.key, None);
    assert_eq!(records[0].1.value, Some(&b"x"[..]));
    assert_eq!(records[0].1.headers().collect::<Vec<_>>(), [(&b""[..], Some(&b"v"[..]))], "a null key reads as empty");
    assert_eq!(records[1].1.value, Some(&7i64.to_le_bytes()[..]), "write_record returns the length");
}
