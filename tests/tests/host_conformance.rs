//! The harness host behaves as the broker does, one test per behaviour a module can observe. Small guest
//! modules written in WebAssembly text provoke what the real transform cannot.
//!
//! Each guest runs the SDK's loop: `read_batch_header`, then per record `read_next_record` and an
//! action whose i64 result it writes as the value of one output record (key null, 8-byte value).

use std::sync::Arc;

use harness::host::{
    BatchOutput, BatchRecord, InputBatch, Limits, LogLevel, TransformMeta, TransformModule, Vm, VmFailure, VmServices,
};
use harness::logs::DroppedLines;
use harness::schema_registry::SchemaRegistry;
use harness::wire::{encode_payload, Payload};

const IMPORTS: &str = r#"
  (import "redpanda_transform" "check_abi_version_2" (func $check))
  (import "redpanda_transform" "read_batch_header" (func $read_batch_header (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "redpanda_transform" "read_next_record" (func $read_next_record (param i32 i32 i32 i32 i32) (result i32)))
  (import "redpanda_transform" "write_record" (func $write_record (param i32 i32) (result i32)))
  (import "redpanda_transform" "write_record_with_options" (func $write_with_options (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
"#;

/// A guest whose per-record action is `action` (a body of type `(result i64)`); `setup` runs in `_start`
/// before the loop. Memory: 2 pages; scratch at 256..1024, output payload at 1024, input at 4096.
fn guest(setup: &str, action: &str, extra: &str) -> String {
    format!(
        r#"(module {IMPORTS}
  {extra}
  (memory (export "memory") 2)
  (global $before_first_batch (mut i64) (i64.const 0))
  (func $action (result i64) {action})
  (func (export "_start")
    (local $count i32) (local $i i32)
    (call $check)
    {setup}
    (loop $batches
      (drop (call $read_batch_header (i32.const 0) (i32.const 8) (i32.const 12) (i32.const 16) (i32.const 20)
                                     (i32.const 24) (i32.const 32) (i32.const 40) (i32.const 48) (i32.const 52)))
      (local.set $count (i32.load (i32.const 8)))
      (local.set $i (i32.const 0))
      (block $done (loop $records
        (br_if $done (i32.ge_s (local.get $i) (local.get $count)))
        (drop (call $read_next_record (i32.const 64) (i32.const 72) (i32.const 80) (i32.const 4096) (i32.const 60000)))
        (i32.store8 (i32.const 1024) (i32.const 1))
        (i32.store8 (i32.const 1025) (i32.const 16))
        (i64.store (i32.const 1026) (call $action))
        (i32.store8 (i32.const 1034) (i32.const 0))
        (drop (call $write_record (i32.const 1024) (i32.const 11)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $records)))
      (br $batches)))
)"#
    )
}

fn meta() -> TransformMeta {
    TransformMeta {
        name: "probe".into(),
        input_topic: "in".into(),
        output_topics: vec!["out".into(), "side".into()],
        env: vec![("GREETING".into(), "hello".into())],
    }
}

fn load(wat: &str, limits: Limits) -> anyhow::Result<TransformModule> {
    TransformModule::load(wat.as_bytes(), limits)
}

fn batch(timestamps: &[i64]) -> Arc<InputBatch> {
    let payload = encode_payload(&Payload { key: Some(b"k".to_vec()), value: Some(b"v".to_vec()), headers: vec![] });
    let records = timestamps
        .iter()
        .enumerate()
        .map(|(i, &timestamp_ms)| BatchRecord { offset: 100 + i as i64, timestamp_ms, payload: payload.clone() })
        .collect();
    Arc::new(InputBatch { partition: 3, records })
}

/// Runs one batch and returns each output record's i64 value (outputs to the first topic only).
fn results(wat: &str, limits: Limits, timestamps: &[i64]) -> Result<Vec<i64>, VmFailure> {
    let module = load(wat, limits).unwrap();
    let (mut vm, _) = Vm::start(&module, &meta())?;
    let output = vm.transform(batch(timestamps))?;
    Ok(output
        .records()
        .filter(|(topic, _)| *topic == 0)
        .map(|(_, payload)| i64::from_le_bytes(payload.value.unwrap().try_into().unwrap()))
        .collect())
}

fn result(action: &str) -> i64 {
    results(&guest("", action, ""), Limits::default(), &[1_000]).unwrap_or_else(|failure| panic!("{failure}"))[0]
}

#[test]
fn memory_growth_past_the_limit_returns_minus_one() {
    // 2 pages + 30 = 2 MiB fits exactly; 31 more does not.
    assert_eq!(result("(i64.extend_i32_s (memory.grow (i32.const 31)))"), -1);
    assert_eq!(result("(i64.extend_i32_s (memory.grow (i32.const 30)))"), 2);
    let small = Limits { memory_bytes: 192 << 10, ..Limits::default() };
    assert_eq!(results(&guest("", "(i64.extend_i32_s (memory.grow (i32.const 2)))", ""), small, &[0]).unwrap(), [-1]);
}

#[test]
fn a_module_whose_initial_memory_exceeds_the_limit_does_not_start() {
    let wat =
        guest("", "(i64.const 0)", "").replace("(memory (export \"memory\") 2)", "(memory (export \"memory\") 40)");
    let failure = Vm::start(&load(&wat, Limits::default()).unwrap(), &meta()).err().expect("refused");
    assert!(failure.reason.contains("memory"), "{failure}");
}

#[test]
fn running_out_of_fuel_traps_with_the_record_offset() {
    let limits = Limits { runtime_ms: 5, ..Limits::default() };
    let failure = results(&guest("", "(loop $forever (br $forever)) (i64.const 0)", ""), limits, &[0, 1]).unwrap_err();
    assert!(failure.reason.contains("out of fuel") && failure.reason.contains("5 ms"), "{failure}");
    assert_eq!(failure.record, Some((3, 100)));
}

#[test]
fn fuel_is_refilled_for_every_record() {
    // About 3 M instructions per record against a budget of 10 M per record (5 ms): fine for many records,
    // though the batch as a whole uses far more than one record's budget.
    let busy = "(local $n i32) (local.set $n (i32.const 1000000))
        (loop $spin (local.set $n (i32.sub (local.get $n) (i32.const 1))) (br_if $spin (local.get $n)))
        (i64.const 7)";
    let limits = Limits { runtime_ms: 5, ..Limits::default() };
    assert_eq!(results(&guest("", busy, ""), limits, &[0; 10]).unwrap(), [7; 10]);
}

#[test]
fn deep_recursion_overflows_the_64_kib_stack() {
    let extra = "(func $deep (param i32) (result i32) (if (result i32) (local.get 0)
        (then (i32.add (i32.const 1) (call $deep (i32.sub (local.get 0) (i32.const 1))))) (else (i32.const 0))))";
    let failure =
        results(&guest("", "(i64.extend_i32_s (call $deep (i32.const 100000)))", extra), Limits::default(), &[0])
            .unwrap_err();
    assert!(failure.reason.contains("stack overflow"), "{failure}");
    assert_eq!(result_with_extra(extra, "(i64.extend_i32_s (call $deep (i32.const 100)))"), 100);
}

fn result_with_extra(extra: &str, action: &str) -> i64 {
    results(&guest("", action, extra), Limits::default(), &[0]).unwrap()[0]
}

/// Writes `bytes` at 256 and returns the `data` segment that does so.
fn data(bytes: &[u8]) -> String {
    data_at(256, bytes)
}

/// The `data` segment that writes `bytes` at `at`.
fn data_at(at: u32, bytes: &[u8]) -> String {
    let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
    format!("(data (i32.const {at}) \"{escaped}\")")
}

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
    let values = harness::wire::PayloadView::parse(output.payload(report)).unwrap().value.unwrap();
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

#[test]
fn the_wall_clock_is_the_record_timestamp_and_zero_before_the_first_batch() {
    let read_clock =
        "(drop (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 256))) (i64.load (i32.const 256))";
    let setup = format!("(global.set $before_first_batch (block (result i64) {read_clock}))");
    assert_eq!(results(&guest(&setup, "(global.get $before_first_batch)", ""), Limits::default(), &[5]).unwrap(), [0]);
    let values =
        results(&guest("", read_clock, ""), Limits::default(), &[1_605_553_200_000, 1_605_553_200_007]).unwrap();
    assert_eq!(values, [1_605_553_200_000_000_000, 1_605_553_200_007_000_000]);
}

#[test]
fn the_monotonic_clock_advances_one_millisecond_per_read() {
    let action = "(drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 256)))
        (drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 264)))
        (i64.sub (i64.load (i32.const 264)) (i64.load (i32.const 256)))";
    assert_eq!(result(action), 1_000_000);
    // The broker's ERRNO_INVAL is 16 (wasi.h), not WASI's 28.
    assert_eq!(result("(i64.extend_i32_s (call $clock_time_get (i32.const 9) (i64.const 1) (i32.const 256)))"), 16);
}

/// The broker's counter returns 0 first, and belongs to the core's engine: a VM that restarts after a
/// trap goes on from where the one before it was.
#[test]
fn the_monotonic_clock_starts_at_0_and_outlives_a_vm_restart() {
    let action = "(drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 256))) (i64.load (i32.const 256))";
    let module = load(&guest("", action, ""), Limits::default()).unwrap();
    let clock = harness::host::MonotonicClock::default();
    let reads = |clock: &harness::host::MonotonicClock| -> Vec<i64> {
        let services = harness::host::VmServices { monotonic: clock.clone(), ..Default::default() };
        let (mut vm, _) = Vm::start_with(&module, &meta(), services).unwrap();
        let output = vm.transform(batch(&[1, 2])).unwrap();
        output.records().map(|(_, payload)| i64::from_le_bytes(payload.value.unwrap().try_into().unwrap())).collect()
    };
    assert_eq!(reads(&clock), vec![0, 1_000_000]);
    assert_eq!(reads(&clock), vec![2_000_000, 3_000_000], "the restarted VM reads on");
}

#[test]
fn random_bytes_are_all_nines() {
    assert_eq!(
        result("(drop (call $random_get (i32.const 256) (i32.const 8))) (i64.load (i32.const 256))"),
        0x0909_0909_0909_0909
    );
}

#[test]
fn unsupported_wasi_calls_return_enosys() {
    assert_eq!(
        result("(i64.extend_i32_s (call $fd_read (i32.const 0) (i32.const 256) (i32.const 0) (i32.const 300)))"),
        52
    );
}

#[test]
fn poll_oneoff_completes_clock_subscriptions_at_once() {
    // One clock subscription (tag 0) with userdata 77: the event echoes it with no error.
    let extra = data(&[77, 0, 0, 0, 0, 0, 0, 0, 0]);
    let action = "(drop (call $poll_oneoff (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 600)))
        (i64.add (i64.load (i32.const 512)) (i64.shl (i64.load32_u (i32.const 600)) (i64.const 32)))";
    assert_eq!(result_with_extra(&extra, action), 77 + (1 << 32));
}

/// Runs a guest over a batch of one record and returns what the batch produced.
fn output(action: &str, extra: &str) -> BatchOutput {
    let module = load(&guest("", action, extra), Limits::default()).unwrap();
    let (mut vm, _) = Vm::start(&module, &meta()).unwrap();
    vm.transform(batch(&[0])).unwrap()
}

/// Runs a guest and returns its log lines.
fn logs(action: &str, extra: &str) -> Vec<(LogLevel, String)> {
    output(action, extra).logs.into_iter().map(|line| (line.level, line.text)).collect()
}

#[test]
fn each_write_to_stdout_or_stderr_is_one_log_line() {
    // Two iovecs ("hello " and "world") in one call make one line; stderr is WARN, stdout INFO.
    let extra =
        format!("{} (data (i32.const 320) \"hello world\")", data(&[64, 1, 0, 0, 6, 0, 0, 0, 70, 1, 0, 0, 5, 0, 0, 0]));
    let action = "(drop (call $fd_write (i32.const 2) (i32.const 256) (i32.const 2) (i32.const 300)))
        (drop (call $fd_write (i32.const 1) (i32.const 256) (i32.const 1) (i32.const 300)))
        (i64.extend_i32_s (call $fd_write (i32.const 3) (i32.const 256) (i32.const 1) (i32.const 300)))";
    assert_eq!(
        logs(action, &extra),
        [(LogLevel::Warn, "hello world".to_string()), (LogLevel::Info, "hello ".to_string())]
    );
}

/// Makes the NULs of the string table at 2048 (its size at 260) newlines: a log line with a NUL is dropped.
const NULS_TO_NEWLINES: &str = "(local.set $i (i32.const 2048))
        (block $end (loop $bytes
          (br_if $end (i32.ge_u (local.get $i) (i32.add (i32.const 2048) (i32.load (i32.const 260)))))
          (if (i32.eqz (i32.load8_u (local.get $i))) (then (i32.store8 (local.get $i) (i32.const 10))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $bytes)))";

/// The environment as the guest reads it: `environ_get`'s buffer, logged to stderr, one entry a line.
fn environment(meta: &TransformMeta) -> Vec<String> {
    let action = format!(
        "(local $i i32) (drop (call $environ_sizes_get (i32.const 256) (i32.const 260)))
        (drop (call $environ_get (i32.const 512) (i32.const 2048)))
        {NULS_TO_NEWLINES}
        (i32.store (i32.const 264) (i32.const 2048))
        (i32.store (i32.const 268) (i32.load (i32.const 260)))
        (drop (call $fd_write (i32.const 2) (i32.const 264) (i32.const 1) (i32.const 300)))
        (i64.load32_u (i32.const 256))"
    );
    let module = load(&guest("", &action, ""), Limits::default()).unwrap();
    let (mut vm, _) = Vm::start(&module, meta).unwrap();
    let output = vm.transform(batch(&[0])).unwrap();
    output.logs[0].text.split('\n').filter(|entry| !entry.is_empty()).map(str::to_string).collect()
}

#[test]
fn the_environment_holds_user_variables_and_the_topics() {
    // In an order of its own (see below), so sorted, as the broker's wasi_test.cc compares it.
    let mut entries = environment(&meta());
    entries.sort();
    assert_eq!(
        entries,
        ["GREETING=hello", "REDPANDA_INPUT_TOPIC=in", "REDPANDA_OUTPUT_TOPIC_0=out", "REDPANDA_OUTPUT_TOPIC_1=side"]
    );
}

/// The broker's environment is a hash map (wasi.h, `environ_map_t`; wasmtime.cc, `make_environment_vars`):
/// its order is not the declaration order and not insertion order. The harness orders it by a fixed hash
/// of each name, so a module that depends on the order fails here too, the same way on every run.
#[test]
fn the_environment_comes_in_an_order_of_its_own_the_same_every_run() {
    let names = ["ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT"];
    let declared = |names: &mut dyn Iterator<Item = &&str>| TransformMeta {
        env: names.map(|name| (name.to_string(), "1".to_string())).collect(),
        ..meta()
    };
    let forward = declared(&mut names.iter());
    let entries = environment(&forward);
    let as_declared: Vec<String> = forward.environment().iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_ne!(entries, as_declared, "not in declaration order");
    let mut sorted = entries.clone();
    sorted.sort();
    let mut expected = as_declared.clone();
    expected.sort();
    assert_eq!(sorted, expected, "the same variables");
    assert_eq!(environment(&forward), entries, "the same order on the next run");
    assert_eq!(
        environment(&declared(&mut names.iter().rev())),
        entries,
        "declared the other way round: the same order"
    );
}

#[test]
fn argv_is_the_transform_name() {
    let action = format!(
        "(local $i i32) (drop (call $args_sizes_get (i32.const 256) (i32.const 260)))
        (drop (call $args_get (i32.const 512) (i32.const 2048)))
        {NULS_TO_NEWLINES}
        (i32.store (i32.const 264) (i32.load (i32.const 512)))
        (i32.store (i32.const 268) (i32.load (i32.const 260)))
        (drop (call $fd_write (i32.const 2) (i32.const 264) (i32.const 1) (i32.const 300)))
        (i64.load32_u (i32.const 256))"
    );
    assert_eq!(logs(&action, ""), [(LogLevel::Warn, "probe\n".to_string())]);
}

#[test]
fn proc_exit_is_a_trap() {
    let failure =
        results(&guest("", "(call $proc_exit (i32.const 3)) (i64.const 0)", ""), Limits::default(), &[0]).unwrap_err();
    assert!(failure.reason.contains("exited with status 3 (proc_exit)"), "{failure}");
}

#[test]
fn out_of_bounds_pointers_trap() {
    let action = "(i64.extend_i32_s (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const -4)))";
    let failure = results(&guest("", action, ""), Limits::default(), &[0]).unwrap_err();
    assert!(failure.reason.contains("Out of bounds memory access"), "{failure}");
}

#[test]
fn start_returning_before_the_first_batch_is_a_start_failure() {
    let wat = format!("(module {IMPORTS} (memory (export \"memory\") 1) (func (export \"_start\") (call $check)))");
    let failure = Vm::start(&load(&wat, Limits::default()).unwrap(), &meta()).err().expect("fails");
    assert!(failure.reason.contains("vm has exited"), "{failure}");
}

#[test]
fn start_up_log_lines_come_with_the_start() {
    let extra = format!("{} (data (i32.const 320) \"ready\")", data(&[64, 1, 0, 0, 5, 0, 0, 0]));
    let setup = "(drop (call $fd_write (i32.const 1) (i32.const 256) (i32.const 1) (i32.const 300)))";
    let module = load(&guest(setup, "(i64.const 0)", &extra), Limits::default()).unwrap();
    let (_, started) = Vm::start(&module, &meta()).unwrap();
    assert_eq!(started.logs.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["ready"]);
}

#[test]
fn modules_the_broker_refuses_are_refused() {
    let minimal = |imports: &str, exports: &str| format!("(module {imports} {exports})");
    let check = r#"(import "redpanda_transform" "check_abi_version_2" (func))"#;
    let start = r#"(memory (export "memory") 1) (func (export "_start"))"#;
    let cases = [
        (minimal(check, r#"(memory (export "memory") 1)"#), "missing required WASI functions"),
        (minimal(check, r#"(memory (export "mem") 1) (func (export "_start"))"#), "invalid memory export name"),
        (minimal(check, r#"(func (export "_start"))"#), "no memory export"),
        (minimal("", start), "missing required transform functions"),
        (
            minimal(&format!(r#"{check} (import "redpanda_schema_registry" "check_abi_version_1" (func))"#), start),
            "unsupported Schema Registry client",
        ),
    ];
    for (wat, expected) in cases {
        let error = format!("{:#}", load(&wat, Limits::default()).err().expect("refused"));
        assert!(error.contains(expected), "{expected}: {error}");
    }
    // An import the broker does not provide passes deploy; creating the processor fails (every 30 s).
    for import in [
        r#"(import "wasi_snapshot_preview1" "fd_fdstat_set_rights" (func (param i32 i64 i64) (result i32)))"#,
        r#"(import "wasi_snapshot_preview1" "proc_raise" (func (param i32) (result i32)))"#,
        r#"(import "env" "anything" (func))"#,
    ] {
        let module = load(&minimal(&format!("{check} {import}"), start), Limits::default()).expect("deploys");
        assert!(module.warnings.iter().any(|warning| warning.contains("does not provide")), "{:?}", module.warnings);
        let failure = Vm::start(&module, &meta()).err().expect("no processor");
        assert!(failure.reason.contains("creating the processor failed"), "{}", failure.reason);
    }
    let too_big = Limits { binary_bytes: 16, ..Limits::default() };
    assert!(format!("{:#}", load(&minimal(check, start), too_big).err().unwrap()).contains("over the 16-byte limit"));
    // The older ABI version and the schema-registry ABI are accepted.
    let v1 = r#"(import "redpanda_transform" "check_abi_version_1" (func))"#;
    let sr = r#"(import "redpanda_schema_registry" "check_abi_version_0" (func))"#;
    assert!(load(&minimal(&format!("{v1} {sr}"), start), Limits::default()).unwrap().imports_schema_registry);
}

#[test]
fn the_schema_registry_stub_stores_and_serves_schemas() {
    let imports = r#"
      (import "redpanda_schema_registry" "check_abi_version_0" (func $sr_check))
      (import "redpanda_schema_registry" "create_subject_schema" (func $create (param i32 i32 i32 i32 i32) (result i32)))
      (import "redpanda_schema_registry" "get_schema_definition_len" (func $def_len (param i32 i32) (result i32)))
      (import "redpanda_schema_registry" "get_subject_schema" (func $subject_schema (param i32 i32 i32 i32 i32) (result i32)))"#;
    // subject "s" at 256; schema_def at 260: JSON (2), sized "{}", no references.
    let extra = format!("{imports} {}", data(&[b's', 0, 0, 0, 4, 4, b'{', b'}', 0]));
    let action = "(drop (call $create (i32.const 256) (i32.const 1) (i32.const 260) (i32.const 5) (i32.const 300)))
        (drop (call $def_len (i32.load (i32.const 300)) (i32.const 304)))
        ;; id | definition length << 16 | bytes of the latest subject schema << 32
        (i64.or (i64.or (i64.load32_u (i32.const 300)) (i64.shl (i64.load32_u (i32.const 304)) (i64.const 16)))
                (i64.shl (i64.extend_i32_u (call $subject_schema (i32.const 256) (i32.const 1) (i32.const -1) (i32.const 400) (i32.const 64))) (i64.const 32)))";
    let value = result_with_extra(&extra, action);
    assert_eq!(value & 0xffff, 1, "first schema id");
    assert_eq!((value >> 16) & 0xffff, 5, "definition length");
    assert_eq!(value >> 32, 7, "varint id, varint version, then the 5-byte definition");
}

mod wire_round_trip {
    use harness::wire::{decode_payload, encode_payload, Header, Payload, PayloadView};
    use proptest::prelude::*;

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
}

/// The broker passes a declared memory maximum in pages where its heap pool expects bytes, so a module
/// with any maximum deploys but its VM never starts there; nor here.
#[test]
fn a_declared_memory_maximum_deploys_but_never_starts() {
    let plain = load(&guest("", "(i64.const 0)", ""), Limits::default()).unwrap();
    assert!(plain.warnings.is_empty(), "{:?}", plain.warnings);
    let bounded =
        guest("", "(i64.const 0)", "").replace("(memory (export \"memory\") 2)", "(memory (export \"memory\") 2 32)");
    let module = load(&bounded, Limits::default()).expect("deploys");
    assert!(module.warnings.iter().any(|warning| warning.contains("maximum (32 pages)")), "{:?}", module.warnings);
    let failure = Vm::start(&module, &meta()).err().expect("the VM does not start");
    assert!(failure.reason.contains("unable to allocate memory within requested bounds"), "{}", failure.reason);
}

/// The broker's wasmtime (version 20) has tail calls, extended constant expressions and 64-bit memories
/// off; a module using one fails to compile there, so it must here (wasmtime 48 enables them).
#[test]
fn proposals_wasmtime_20_had_off_are_refused() {
    let cases = [
        ("tail call", "(return_call $answer)", "(func $answer (result i64) (i64.const 1))"),
        ("extended constant", "(global.get $sum)", "(global $sum i64 (i64.add (i64.const 1) (i64.const 2)))"),
    ];
    for (proposal, action, extra) in cases {
        let error = format!("{:#}", load(&guest("", action, extra), Limits::default()).err().expect(proposal));
        assert!(error.contains("invalid WebAssembly module"), "{proposal}: {error}");
    }
    // What wasmtime 20 enabled by default still loads: SIMD, bulk memory, multi-value, reference types.
    let simd = "(i64x2.extract_lane 0 (i64x2.splat (i64.const 5)))";
    assert_eq!(results(&guest("", simd, ""), Limits::default(), &[0]).unwrap(), [5]);
    let bulk = "(memory.fill (i32.const 2048) (i32.const 7) (i32.const 8)) (i64.load (i32.const 2048))";
    assert_eq!(results(&guest("", bulk, ""), Limits::default(), &[0]).unwrap(), [0x0707_0707_0707_0707]);
}

/// Without guard pages every access is bounds-checked: one past the memory traps at its exact end,
/// and growing moves the memory (no reserve) while keeping its contents.
#[test]
fn memory_without_guard_pages_is_checked_at_its_exact_end_and_keeps_its_contents_when_grown() {
    let last = "(i64.load8_u (i32.const 131071))";
    assert_eq!(results(&guest("", last, ""), Limits::default(), &[0]).unwrap(), [0]);
    let past = "(i64.load8_u (i32.const 131072))";
    let failure = results(&guest("", past, ""), Limits::default(), &[0]).expect_err("out of bounds");
    assert!(failure.reason.contains("out of bounds"), "{}", failure.reason);
    let grown =
        "(i64.store (i32.const 4096) (i64.const 42)) (drop (memory.grow (i32.const 20))) (i64.load (i32.const 4096))";
    assert_eq!(results(&guest("", grown, ""), Limits::default(), &[0]).unwrap(), [42]);
}

/// Regression (closing_looped_on_copying_transforms): closing heartbeats repeated while a heartbeat wrote
/// two records or more, forever for a transform that writes two records per input.
#[test]
fn closing_windows_ends_for_a_transform_that_copies_each_record_twice() {
    use harness::pipeline::{OutputRecord, OutputSink, Pipeline, ProducerRecord};
    struct Count(u64);
    impl OutputSink for Count {
        fn record(&mut self, _record: &OutputRecord<'_>) -> anyhow::Result<()> {
            self.0 += 1;
            Ok(())
        }
        fn log(&mut self, _shard: u32, _line: &harness::host::LogLine) {}
    }
    // The action writes the output record at 1024 once more before the loop writes it.
    let twice = guest("", "(drop (call $write_record (i32.const 1024) (i32.const 11))) (i64.const 7)", "");
    let module = load(&twice, Limits::default()).unwrap();
    let mut sink = Count(0);
    let mut pipeline = Pipeline::new(module, meta(), integration_tests::replay::clickstream_config(), &mut sink);
    pipeline.start().unwrap();
    for second in 0..3 {
        let value = format!(r#"{{"timestamp":"2020-11-16 19:00:0{second}","user_id":"u"}}"#).into_bytes();
        pipeline.push(ProducerRecord { value: Some(value), ..ProducerRecord::default() }).unwrap();
    }
    pipeline.close_windows().unwrap();
    let stats = pipeline.finish().unwrap();
    assert_eq!(stats.records_in, 5, "three records, then two closing heartbeats (the second wrote the same)");
    assert_eq!(sink.0, 10, "two records for each of the five");
}

// ---- Reporting several values from one action ----

/// Where `report` builds its extra output record, in the scratch area: 512..580, keep guest data out of it.
const REPORT_AT: usize = 512;

/// An action that evaluates each i32 expression in order and writes their values, little-endian, as the
/// value of one extra output record (before the loop's own); `reported` reads them back.
fn report(exprs: &[&str]) -> String {
    assert!(exprs.len() <= 15, "the value's length must fit a one-byte varint");
    let len = 4 * exprs.len();
    let mut wat: String = exprs
        .iter()
        .enumerate()
        .map(|(i, expr)| format!("(i32.store (i32.const {}) {expr})\n", REPORT_AT + 2 + 4 * i))
        .collect();
    wat += &format!(
        "(i32.store8 (i32.const {REPORT_AT}) (i32.const 1))
         (i32.store8 (i32.const {}) (i32.const {}))
         (i32.store8 (i32.const {}) (i32.const 0))
         (drop (call $write_record (i32.const {REPORT_AT}) (i32.const {})))
         (i64.const 0)",
        REPORT_AT + 1,
        2 * len,
        REPORT_AT + 2 + len,
        len + 3
    );
    wat
}

/// The values a `report` action wrote: the batch's first output record.
fn reported(output: &BatchOutput) -> Vec<i32> {
    let (_, payload) = output.records().next().expect("the report record");
    let value = payload.value.expect("a value");
    value.chunks_exact(4).map(|chunk| i32::from_le_bytes(chunk.try_into().unwrap())).collect()
}

// ---- Log lines ----

/// Where the log tests put their text: the second page, clear of the scratch and input areas.
const TEXT_AT: u32 = 65536;
/// The count the last `fd_write` reported written (its out-pointer; the iovec is at 480).
const WRITTEN: &str = "(i32.load (i32.const 488))";

/// An i32 expression: one `fd_write` of `len` bytes at `ptr` to stderr; its errno.
fn write_to_stderr(ptr: u32, len: u32) -> String {
    format!(
        "(block (result i32)
           (i32.store (i32.const 480) (i32.const {ptr})) (i32.store (i32.const 484) (i32.const {len}))
           (call $fd_write (i32.const 2) (i32.const 480) (i32.const 1) (i32.const 488)))"
    )
}

/// Writes `bytes` at `TEXT_AT` to stderr in one `fd_write`: the lines kept, the drops, and [errno, written].
fn log_one_write(bytes: &[u8]) -> (Vec<String>, DroppedLines, Vec<i32>) {
    let action = report(&[&write_to_stderr(TEXT_AT, bytes.len() as u32), WRITTEN]);
    let output = output(&action, &data_at(TEXT_AT, bytes));
    let lines = output.logs.iter().map(|line| line.text.clone()).collect();
    (lines, output.dropped_logs, reported(&output))
}

/// The broker keeps the first `data_transforms_logging_line_max_bytes` (1024) of a write (log_manager.cc).
#[test]
fn a_2_kib_log_write_arrives_as_one_line_of_1024_bytes() {
    let fill = format!(
        "(block (result i32) (memory.fill (i32.const {TEXT_AT}) (i32.const 97) (i32.const 2048)) (i32.const 0))"
    );
    let output = output(&report(&[&fill, &write_to_stderr(TEXT_AT, 2048), WRITTEN]), "");
    let lines: Vec<_> = output.logs.iter().map(|line| (line.level, line.text.clone())).collect();
    assert_eq!(lines, [(LogLevel::Warn, "a".repeat(1024))]);
    assert_eq!(output.dropped_logs, DroppedLines::default());
    assert_eq!(reported(&output), [0, 0, 2048], "fd_write reports all 2048 bytes written");
}

/// The broker drops a line that is not valid UTF-8 (log_manager.cc, `contains_invalid_characters`).
#[test]
fn a_log_write_that_is_not_utf8_is_dropped() {
    let (lines, dropped, reported) = log_one_write(b"bad \xff byte");
    assert_eq!(lines, Vec::<String>::new());
    assert_eq!(dropped, DroppedLines { invalid_text: 1, buffer_full: 0 });
    assert_eq!(reported, [0, 10], "fd_write still reports the 10 bytes written");
}

/// The broker drops a line holding a control character other than newline and tab (log_manager.cc).
#[test]
fn a_log_write_with_an_escape_character_is_dropped() {
    let (lines, dropped, reported) = log_one_write(b"\x1b[31mred");
    assert_eq!(lines, Vec::<String>::new());
    assert_eq!(dropped, DroppedLines { invalid_text: 1, buffer_full: 0 });
    assert_eq!(reported, [0, 8]);
}

/// Newline and tab are the control characters the broker lets through (log_manager.cc).
#[test]
fn a_log_write_with_a_tab_and_a_newline_is_kept_as_is() {
    let (lines, dropped, reported) = log_one_write(b"key\tvalue\n");
    assert_eq!(lines, ["key\tvalue\n"]);
    assert_eq!(dropped, DroppedLines::default());
    assert_eq!(reported, [0, 10]);
    // Regression (c1_controls_were_dropped): the broker's control characters are the bytes 0x00 to 0x1F and
    // 0x7F; U+0085 (bytes C2 85) is kept, and DEL is not.
    assert_eq!(log_one_write("next\u{85}line".as_bytes()).0, ["next\u{85}line"]);
    assert_eq!(log_one_write(b"del\x7f").1, DroppedLines { invalid_text: 1, buffer_full: 0 });
}

/// The broker cuts at 1024 bytes, then validates: a cut through a UTF-8 character drops the line (log_manager.cc).
#[test]
fn a_log_line_cut_inside_a_utf8_character_is_dropped_whole() {
    // 1023 ASCII bytes then 'é' (2 bytes): the cut keeps its first byte only.
    let (lines, dropped, reported) = log_one_write(&[&[b'a'; 1023][..], "é".as_bytes()].concat());
    assert_eq!(lines, Vec::<String>::new());
    assert_eq!(dropped, DroppedLines { invalid_text: 1, buffer_full: 0 });
    assert_eq!(reported, [0, 1025]);
    // One ASCII byte fewer: 'é' ends exactly at the limit and the line is kept whole.
    let (lines, dropped, _) = log_one_write(&[&[b'a'; 1022][..], "é".as_bytes()].concat());
    assert_eq!(lines, [format!("{}é", "a".repeat(1022))]);
    assert_eq!(dropped, DroppedLines::default());
}

/// The broker drops a line that does not fit the shard's 500 KiB log buffer (log_manager.cc, `try_get_units`).
#[test]
fn log_lines_beyond_the_500_kib_buffer_are_dropped() {
    // 502 lines of 1024 bytes: the 500th fills the 512,000 bytes exactly; the two after it, and a 1-byte
    // line after those, are dropped.
    let extra = format!(
        r#"(func $flood (param $times i32) (result i32) (local $errors i32)
             (memory.fill (i32.const {TEXT_AT}) (i32.const 97) (i32.const 1024))
             (i32.store (i32.const 480) (i32.const {TEXT_AT})) (i32.store (i32.const 484) (i32.const 1024))
             (loop $lines
               (local.set $errors (i32.or (local.get $errors)
                 (call $fd_write (i32.const 2) (i32.const 480) (i32.const 1) (i32.const 488))))
               (local.set $times (i32.sub (local.get $times) (i32.const 1)))
               (br_if $lines (local.get $times)))
             (local.get $errors))
           {}"#,
        data_at(TEXT_AT + 4096, b"z")
    );
    let flood = "(call $flood (i32.const 502))";
    let output = output(&report(&[flood, WRITTEN, &write_to_stderr(TEXT_AT + 4096, 1), WRITTEN]), &extra);
    assert_eq!(output.logs.len(), 500);
    assert!(output.logs.iter().all(|line| line.text == "a".repeat(1024)));
    assert_eq!(output.dropped_logs, DroppedLines { invalid_text: 0, buffer_full: 3 });
    assert_eq!(reported(&output), [0, 1024, 0, 1], "every write succeeds and reports its bytes written");
}

// ---- WASI pointers ----

/// `args_get` and `environ_get` catch a bad pointer and answer the broker's INVAL (16) (wasi.cc, `translate_array` in a try).
#[test]
fn args_get_and_environ_get_outside_memory_answer_inval() {
    // Memory is 2 pages (131,072 bytes); argv is "probe\0" (6 bytes), the environment has 4 entries.
    let exprs = [
        "(call $args_get (i32.const -8) (i32.const 2048))",
        "(call $args_get (i32.const 704) (i32.const 131070))",
        "(i32.load (i32.const 704))",
        "(call $args_get (i32.const 704) (i32.const 131066))",
        "(i32.load (i32.const 704))",
        "(call $environ_get (i32.const 131064) (i32.const 2048))",
        "(call $environ_get (i32.const 800) (i32.const -1))",
        "(i32.load (i32.const 800))",
    ];
    let values = reported(&output(&report(&exprs), ""));
    assert_eq!(
        values,
        [16, 16, 0, 0, 131_066, 16, 16, 0],
        "table outside, buffer past the end (nothing written), buffer ending at the end (written), \
         a 4-entry table past the end, a buffer outside (nothing written)"
    );
}

/// `args_sizes_get`'s out-pointers are checked by the broker's FFI wrapper: outside memory, a trap (wasi.cc, ffi.h).
#[test]
fn args_sizes_get_outside_memory_traps() {
    for (count, size) in [(131_072, 260), (256, -1)] {
        let action = format!("(i64.extend_i32_s (call $args_sizes_get (i32.const {count}) (i32.const {size})))");
        let failure = results(&guest("", &action, ""), Limits::default(), &[0]).unwrap_err();
        assert!(failure.reason.contains("Out of bounds memory access"), "{failure}");
    }
}

// ---- Transform ABI pointer bounds ----

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

// ---- Schema registry ----

const SCHEMA_REGISTRY_IMPORTS: &str = r#"
  (import "redpanda_schema_registry" "check_abi_version_0" (func $sr_check))
  (import "redpanda_schema_registry" "create_subject_schema" (func $create (param i32 i32 i32 i32 i32) (result i32)))
  (import "redpanda_schema_registry" "get_schema_definition_len" (func $def_len (param i32 i32) (result i32)))
  (import "redpanda_schema_registry" "get_schema_definition" (func $def (param i32 i32 i32) (result i32)))
  (import "redpanda_schema_registry" "get_subject_schema_len" (func $subject_schema_len (param i32 i32 i32 i32) (result i32)))
  (import "redpanda_schema_registry" "get_subject_schema" (func $subject_schema (param i32 i32 i32 i32 i32) (result i32)))"#;

/// Subject "s" at 256, then `schema_def`s (zigzag format, sized text, no references): JSON `{}` at 260 and
/// Avro `[]` at 266 (5 bytes each; the broker only sanitises Avro here, so an empty union passes), Avro
/// `not` at 272 and JSON `not` at 280 (6 bytes each).
fn registry_guest(exprs: &[&str]) -> String {
    let mut bytes = vec![0u8; 30];
    bytes[0] = b's';
    bytes[4..9].copy_from_slice(&[4, 4, b'{', b'}', 0]);
    bytes[10..15].copy_from_slice(&[0, 4, b'[', b']', 0]);
    bytes[16..22].copy_from_slice(&[0, 6, b'n', b'o', b't', 0]);
    bytes[24..30].copy_from_slice(&[4, 6, b'n', b'o', b't', 0]);
    guest("", &report(exprs), &format!("{SCHEMA_REGISTRY_IMPORTS} {}", data(&bytes)))
}

/// Registers the schema_def at `at` (`len` bytes) under "s"; the id goes to `id_out`.
fn create(at: u32, len: u32, id_out: u32) -> String {
    format!("(call $create (i32.const 256) (i32.const 1) (i32.const {at}) (i32.const {len}) (i32.const {id_out}))")
}

/// Reads version `version` (−1: latest) of "s" into 400..464: varint id, varint version, schema_def.
fn subject_schema(version: i32) -> String {
    format!("(call $subject_schema (i32.const 256) (i32.const 1) (i32.const {version}) (i32.const 400) (i32.const 64))")
}

/// Runs a registry guest over one record with `registry` as the cluster's schema registry.
fn registry_run(wat: &str, registry: SchemaRegistry) -> Vec<i32> {
    let module = load(wat, Limits::default()).unwrap();
    let services = VmServices { schema_registry: registry, ..Default::default() };
    let (mut vm, _) = Vm::start_with(&module, &meta(), services).unwrap();
    reported(&vm.transform(batch(&[0])).unwrap())
}

/// A transform registers through `schema::registry::create_schema` (schema/registry.cc), which writes the
/// subject version with no schema id: `sharded_store::project_ids` then takes the next id, and
/// `store::project_version` the subject's next version, even for a schema the subject already has (the
/// REST API looks the schema up first; this path does not).
#[test]
fn registering_the_same_schema_twice_gives_a_new_id_and_a_new_version() {
    let (json_object, latest, version_1) = (create(260, 5, 300), subject_schema(-1), subject_schema(1));
    let exprs = [
        json_object.as_str(),
        &create(260, 5, 304),
        "(i32.load (i32.const 300))",
        "(i32.load (i32.const 304))",
        &latest,
        "(i32.load8_u (i32.const 400))",
        "(i32.load8_u (i32.const 401))",
        &version_1,
        "(i32.load8_u (i32.const 400))",
        "(call $def_len (i32.const 1) (i32.const 308))",
        "(call $def_len (i32.const 2) (i32.const 312))",
        "(i32.load (i32.const 312))",
    ];
    let values = registry_run(&registry_guest(&exprs), SchemaRegistry::default());
    // The latest is 7 bytes: id 2 and version 2 (zigzag 4 each), then the 5-byte schema_def; version 1 is id 1.
    assert_eq!(values, [0, 0, 1, 2, 7, 4, 4, 7, 2, 0, 0, 5]);
}

/// Regression (trailing_schema_bytes_were_refused): the broker's decoder ignores bytes after a schema_def's
/// references, so a definition with a trailing byte registers, and is served without it.
#[test]
fn bytes_after_a_schema_definition_are_ignored() {
    let exprs = [create(260, 6, 300), create(260, 5, 304), "(i32.load (i32.const 304))".into(), subject_schema(1)];
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    let values = registry_run(&registry_guest(&exprs), SchemaRegistry::default());
    assert_eq!(values, [0, 0, 2, 7], "version 1 served as 7 bytes (the 5-byte definition)");
}

/// A different schema under the same subject is its next version, with a new id (schema_registry_module.cc).
#[test]
fn a_second_schema_under_a_subject_is_version_2() {
    let (latest, version_1) = (subject_schema(-1), subject_schema(1));
    let exprs = [
        create(260, 5, 300),
        create(266, 5, 304),
        "(i32.load (i32.const 300))".into(),
        "(i32.load (i32.const 304))".into(),
        latest,
        "(i32.load8_u (i32.const 400))".into(),
        "(i32.load8_u (i32.const 401))".into(),
        "(i32.load8_u (i32.const 404))".into(),
        version_1,
        "(i32.load8_u (i32.const 400))".into(),
        "(i32.load8_u (i32.const 401))".into(),
        "(i32.load8_u (i32.const 404))".into(),
    ];
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    let values = registry_run(&registry_guest(&exprs), SchemaRegistry::default());
    // Latest: id 2, version 2 (zigzag 4), text "[]"; version 1: id 1, version 1 (zigzag 2), text "{}".
    assert_eq!(values, [0, 0, 1, 2, 7, 4, 4, i32::from(b'['), 7, 2, 2, i32::from(b'{')]);
}

/// The broker parses Avro and JSON schemas when registered: text that is not JSON is −2 (schema_registry_module.cc).
#[test]
fn an_avro_or_json_schema_that_is_not_json_gets_minus_2() {
    let exprs = [
        create(272, 6, 300),
        create(280, 6, 300),
        "(call $subject_schema_len (i32.const 256) (i32.const 1) (i32.const -1) (i32.const 304))".into(),
        create(260, 5, 300),
        "(i32.load (i32.const 300))".into(),
    ];
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    let values = registry_run(&registry_guest(&exprs), SchemaRegistry::default());
    assert_eq!(values, [-2, -2, -2, 0, 1], "Avro, JSON, nothing registered, then valid JSON gets the first id");
}

/// A `schema_def` in wire form: zigzag format (0 Avro, 1 Protobuf, 2 JSON), sized text, no references.
fn schema_def(format: i64, text: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    harness::wire::put_varint(&mut bytes, format);
    harness::wire::put_varint(&mut bytes, text.len() as i64);
    bytes.extend_from_slice(text.as_bytes());
    harness::wire::put_varint(&mut bytes, 0);
    bytes
}

/// Registers each (format, text) under "s" in turn: each call's answer (the id, or the error), and the
/// definition each new id serves (`get_schema_definition`), as `schema_def` bytes.
fn register(schemas: &[(i64, &str)]) -> (Vec<i32>, Vec<Vec<u8>>) {
    // `$register` creates, then writes what the new id serves as a record of its own (payload at 12288:
    // null key, a two-byte value length, the definition read into 8192, no headers).
    let helpers = r#"
      (func $emit (param $ptr i32) (param $len i32)
        (i32.store8 (i32.const 12288) (i32.const 1))
        (i32.store8 (i32.const 12289)
                    (i32.or (i32.and (i32.shl (local.get $len) (i32.const 1)) (i32.const 127)) (i32.const 128)))
        (i32.store8 (i32.const 12290) (i32.shr_u (local.get $len) (i32.const 6)))
        (memory.copy (i32.const 12291) (local.get $ptr) (local.get $len))
        (i32.store8 (i32.add (i32.const 12291) (local.get $len)) (i32.const 0))
        (drop (call $write_record (i32.const 12288) (i32.add (local.get $len) (i32.const 4)))))
      (func $register (param $at i32) (param $len i32) (result i32) (local $code i32)
        (local.set $code (call $create (i32.const 256) (i32.const 1) (local.get $at) (local.get $len) (i32.const 300)))
        (if (result i32) (local.get $code) (then (local.get $code))
          (else (call $emit (i32.const 8192) (call $def (i32.load (i32.const 300)) (i32.const 8192) (i32.const 4096)))
                (i32.load (i32.const 300)))))"#;
    const AT: usize = 70_000;
    let mut bytes = Vec::new();
    let mut calls = Vec::new();
    for (format, text) in schemas {
        let def = schema_def(*format, text);
        calls.push(format!("(call $register (i32.const {}) (i32.const {}))", AT + bytes.len(), def.len()));
        bytes.extend(def);
    }
    let calls: Vec<&str> = calls.iter().map(String::as_str).collect();
    let extra = format!("{SCHEMA_REGISTRY_IMPORTS} {helpers} {} {}", data(b"s"), data_at(AT as u32, &bytes));
    let output = output(&report(&calls), &extra);
    let mut values: Vec<Vec<u8>> =
        output.records().map(|(_, payload)| payload.value.expect("a value").to_vec()).collect();
    values.pop(); // the loop's own record
    let report = values.pop().expect("the report");
    (report.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect(), values)
}

/// The broker keeps an Avro schema as `sanitize_avro_schema_definition` leaves it (avro.cc): the first
/// JSON value (what follows is ignored), written without whitespace; a fullname split into name and
/// namespace, a namespace equal to the enclosing one dropped; attributes in its order (`member_sorter`:
/// `type` first in records, enums, arrays, maps and fixed, `name` first elsewhere). It checks names, a
/// record's `fields` and namespaces, and nothing else of Avro: an unknown type passes.
#[test]
fn avro_schemas_are_stored_as_the_broker_sanitises_them() {
    let record = r#" {"fields": [{"type": {"symbols": ["A"], "name": "ns.E", "type": "enum"}, "name": "e"}],
        "name": "ns.R", "type": "record"} and then anything"#;
    let (answers, served) = register(&[
        (0, record),
        (0, r#"{"type": "nonsense"}"#),
        (0, r#"{"type": "record", "name": "R"}"#),
        (0, r#"{"type": "record", "name": "", "fields": []}"#),
        (0, r#"{"type": "record", "name": "R", "namespace": 7, "fields": []}"#),
        (0, ""),
        (0, "{"),
    ]);
    assert_eq!(answers, [1, 2, -2, -2, -2, -2, -2]);
    let canonical = concat!(
        r#"{"type":"record","name":"R","namespace":"ns","#,
        r#""fields":[{"name":"e","type":{"type":"enum","name":"E","symbols":["A"]}}]}"#
    );
    assert_eq!(served, [schema_def(0, canonical), schema_def(0, r#"{"type":"nonsense"}"#)]);
}

/// The broker checks a JSON schema against its dialect's metaschema (json.cc, `parse_json`: `$schema`
/// if given, else any of drafts 2020-12 to 4) and keeps it written without whitespace.
#[test]
fn json_schemas_are_checked_and_stored_without_whitespace() {
    let (answers, served) = register(&[
        (2, r#"{ "type" : "object", "properties" : { "a" : { "type" : ["string", "null"] } } }"#),
        (2, "true"),
        (2, r#"{"type": "text"}"#),
        (2, r#"{"required": "a"}"#),
        (2, r#"{"$schema": "http://example.com/schema"}"#),
        (2, "42"),
        (2, r#"{"minLength": -1}"#),
        (2, r#"{"properties": {"a": 1}}"#),
        (2, "{} {}"),
    ]);
    assert_eq!(answers, [1, 2, -2, -2, -2, -2, -2, -2, -2]);
    let compact = r#"{"type":"object","properties":{"a":{"type":["string","null"]}}}"#;
    assert_eq!(served, [schema_def(2, compact), schema_def(2, "true")]);
}

/// The broker builds a Protobuf schema with protobuf's own parser and descriptor pool (protobuf.cc,
/// `make_canonical_protobuf_schema`); one that does not build is −2.
#[test]
fn protobuf_schemas_that_do_not_build_get_minus_2() {
    let proto3 = r#"syntax = "proto3";
        package p;
        import "google/protobuf/timestamp.proto";
        // A comment.
        message M {
          string a = 1;
          repeated int64 b = 2 [packed = true];
          map<string, M> c = 3;
          oneof o { bool d = 4; }
          enum E { Z = 0; ONE = 1; }
          E e = 5;
          google.protobuf.Timestamp at = 6;
          reserved 7, 9 to 11;
          reserved "old";
        }"#;
    let (answers, _) = register(&[
        (1, proto3),
        (1, "message M { optional string a = 1; required M m = 2; }"),
        (1, r#"syntax = "proto3"; message M { string a = 1 }"#),
        (1, r#"syntax = "proto3"; message M { required string a = 1; }"#),
        (1, r#"syntax = "proto3"; message M { string a = 1; string b = 1; }"#),
        (1, r#"syntax = "proto3"; message M { Missing a = 1; }"#),
        (1, r#"syntax = "proto3"; import "other.proto"; message M { string a = 1; }"#),
        (1, r#"syntax = "proto3"; enum E { A = 1; }"#),
        (1, r#"syntax = "proto2"; message M { string a = 1; }"#),
        (1, r#"syntax = "proto4";"#),
        (1, "not a schema"),
    ]);
    assert_eq!(answers, [1, 2, -2, -2, -2, -2, -2, -2, -2, -2, -2]);
}

/// Without a schema registry every function answers −1 (schema_registry_module.cc, `is_enabled`).
#[test]
fn a_disabled_schema_registry_answers_minus_1_to_everything() {
    let exprs = [
        create(260, 5, 300),
        "(call $def_len (i32.const 1) (i32.const 304))".into(),
        "(call $def (i32.const 1) (i32.const 400) (i32.const 64))".into(),
        "(call $subject_schema_len (i32.const 256) (i32.const 1) (i32.const -1) (i32.const 304))".into(),
        subject_schema(-1),
    ];
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    let wat = registry_guest(&exprs);
    assert_eq!(registry_run(&wat, SchemaRegistry::disabled()), [-1; 5]);
    assert_eq!(registry_run(&wat, SchemaRegistry::default()), [0, 0, 5, 0, 7], "the same calls, enabled");
}

/// The registry is the cluster's: a schema one VM registers is there for the next VM (schema_registry_module.cc).
#[test]
fn vms_sharing_a_schema_registry_see_each_others_schemas() {
    let exprs = [
        "(call $subject_schema_len (i32.const 256) (i32.const 1) (i32.const -1) (i32.const 304))".to_string(),
        create(260, 5, 300),
        "(i32.load (i32.const 300))".into(),
    ];
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    let wat = registry_guest(&exprs);
    let cluster = SchemaRegistry::default();
    assert_eq!(registry_run(&wat, cluster.clone()), [-2, 0, 1], "the first VM finds no subject, then registers it");
    assert_eq!(registry_run(&wat, cluster.clone()), [0, 0, 2], "the next VM finds it; registering again is id 2");
    assert_eq!(registry_run(&wat, SchemaRegistry::default()), [-2, 0, 1], "another cluster's registry does not");
}

// ---- Deploy parser ----

/// A minimal transform module in binary form: the ABI import, `memory` and an empty `_start`.
fn minimal_binary() -> Vec<u8> {
    fn section(id: u8, body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 128, "a one-byte size");
        [&[id, body.len() as u8][..], body].concat()
    }
    fn name(text: &str) -> Vec<u8> {
        [&[text.len() as u8][..], text.as_bytes()].concat()
    }
    let imports = [&[1][..], &name("redpanda_transform"), &name("check_abi_version_2"), &[0, 0]].concat();
    let exports = [&[2][..], &name("memory"), &[2, 0], &name("_start"), &[0, 1]].concat();
    [
        &b"\0asm\x01\0\0\0"[..],
        &section(1, &[1, 0x60, 0, 0]),
        &section(2, &imports),
        &section(3, &[1, 0]),
        &section(5, &[1, 0, 1]),
        &section(7, &exports),
        &section(10, &[1, 2, 0, 0x0b]),
    ]
    .concat()
}

fn deploy_error(wasm: &[u8]) -> String {
    format!("{:#}", TransformModule::load(wasm, Limits::default()).err().expect("refused"))
}

/// The broker's parser knows no v128 value type in a function type (parser.cc, `parse_val_type`).
#[test]
fn a_function_type_with_a_v128_parameter_is_refused() {
    let error = deploy_error(guest("", "(i64.const 0)", "(func (param v128))").as_bytes());
    assert!(error.contains("the broker's deploy parser") && error.contains("v128"), "{error}");
}

/// The broker's parser takes a global initialiser of one instruction only (parser.cc, `skip_global_constexpr`).
#[test]
fn a_global_with_an_extended_constant_initialiser_is_refused() {
    let extra = "(global i32 (i32.add (i32.const 1) (i32.const 2)))";
    let error = deploy_error(guest("", "(i64.const 0)", extra).as_bytes());
    assert!(error.contains("the broker's deploy parser") && error.contains("longer than one instruction"), "{error}");
}

/// The broker's parser refuses a section id it does not know (parser.cc, `parse_one_section`).
#[test]
fn a_binary_with_an_unknown_section_id_is_refused() {
    let valid = minimal_binary();
    assert!(TransformModule::load(&valid, Limits::default()).is_ok(), "the minimal binary deploys");
    let error = deploy_error(&[&valid[..], &[13, 0]].concat());
    assert!(error.contains("the broker's deploy parser") && error.contains("unknown section id 13"), "{error}");
}

/// The broker's parser skips code: SIMD inside a function body deploys and runs (parser.cc, `parse_one_section`).
#[test]
fn simd_inside_a_function_body_is_accepted() {
    let extra = "(func $simd (result i32) (i32x4.extract_lane 2 (i32x4.splat (i32.const 7))))";
    assert_eq!(result_with_extra(extra, "(i64.extend_i32_s (call $simd))"), 7);
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
