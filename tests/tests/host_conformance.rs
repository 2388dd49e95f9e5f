//! The harness host behaves as the broker does, one test per behaviour a module can observe. Small guest
//! modules written in WebAssembly text provoke what the real transform cannot.
//!
//! Each guest runs the SDK's loop: `read_batch_header`, then per record `read_next_record` and an
//! action whose i64 result it writes as the value of one output record (key null, 8-byte value).

use std::sync::Arc;

use harness::host::{BatchRecord, InputBatch, Limits, LogLevel, TransformMeta, TransformModule, Vm, VmFailure};
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
    let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
    format!("(data (i32.const 256) \"{escaped}\")")
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
    // Regression (inval_was_16): WASI's EINVAL is 28 (16 is EDEADLK); the harness answered 16.
    assert_eq!(result("(i64.extend_i32_s (call $clock_time_get (i32.const 9) (i64.const 1) (i32.const 256)))"), 28);
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

/// Runs a guest and returns its log lines.
fn logs(action: &str, extra: &str) -> Vec<(LogLevel, String)> {
    let module = load(&guest("", action, extra), Limits::default()).unwrap();
    let (mut vm, _) = Vm::start(&module, &meta()).unwrap();
    vm.transform(batch(&[0])).unwrap().logs.into_iter().map(|line| (line.level, line.text)).collect()
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

#[test]
fn the_environment_holds_user_variables_and_the_topics() {
    // Write the whole environ buffer to stderr, its NULs made newlines (a log line with a NUL is dropped).
    let action = "(local $i i32) (drop (call $environ_sizes_get (i32.const 256) (i32.const 260)))
        (drop (call $environ_get (i32.const 512) (i32.const 2048)))
        (local.set $i (i32.const 2048))
        (block $end (loop $bytes
          (br_if $end (i32.ge_u (local.get $i) (i32.add (i32.const 2048) (i32.load (i32.const 260)))))
          (if (i32.eqz (i32.load8_u (local.get $i))) (then (i32.store8 (local.get $i) (i32.const 10))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $bytes)))
        (i32.store (i32.const 264) (i32.const 2048))
        (i32.store (i32.const 268) (i32.load (i32.const 260)))
        (drop (call $fd_write (i32.const 2) (i32.const 264) (i32.const 1) (i32.const 300)))
        (i64.load32_u (i32.const 256))";
    let lines = logs(action, "");
    let entries: Vec<&str> = lines[0].1.split('\n').filter(|entry| !entry.is_empty()).collect();
    assert_eq!(
        entries,
        ["GREETING=hello", "REDPANDA_INPUT_TOPIC=in", "REDPANDA_OUTPUT_TOPIC_0=out", "REDPANDA_OUTPUT_TOPIC_1=side"]
    );
}

#[test]
fn argv_is_the_transform_name() {
    let action = "(local $i i32) (drop (call $args_sizes_get (i32.const 256) (i32.const 260)))
        (drop (call $args_get (i32.const 512) (i32.const 2048)))
        (local.set $i (i32.const 2048))
        (block $end (loop $bytes
          (br_if $end (i32.ge_u (local.get $i) (i32.add (i32.const 2048) (i32.load (i32.const 260)))))
          (if (i32.eqz (i32.load8_u (local.get $i))) (then (i32.store8 (local.get $i) (i32.const 10))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $bytes)))
        (i32.store (i32.const 264) (i32.load (i32.const 512)))
        (i32.store (i32.const 268) (i32.load (i32.const 260)))
        (drop (call $fd_write (i32.const 2) (i32.const 264) (i32.const 1) (i32.const 300)))
        (i64.load32_u (i32.const 256))";
    assert_eq!(logs(action, ""), [(LogLevel::Warn, "probe\n".to_string())]);
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
        /// it is refused (−2 in the broker), and so is anything after it.
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
/// with any maximum deploys but never starts there; the harness runs it and warns.
#[test]
fn a_declared_memory_maximum_is_warned_about() {
    let plain = load(&guest("", "(i64.const 0)", ""), Limits::default()).unwrap();
    assert!(plain.warnings.is_empty(), "{:?}", plain.warnings);
    let bounded =
        guest("", "(i64.const 0)", "").replace("(memory (export \"memory\") 2)", "(memory (export \"memory\") 2 32)");
    let module = load(&bounded, Limits::default()).unwrap();
    assert_eq!(module.warnings.len(), 1);
    assert!(module.warnings[0].contains("maximum (32 pages)"), "{:?}", module.warnings);
    assert_eq!(results(&bounded, Limits::default(), &[1_000]).unwrap(), [0], "the harness still runs it");
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
