//! The WASI functions as the broker implements them (`wasm/wasi.cc`): clocks, random bytes, the
//! environment and arguments, log lines from stdout and stderr, exits and pointer checks.

mod common;

use common::*;
use transform_host::logs::DroppedLines;
use transform_host::{Limits, LogLevel, TransformMeta, Vm};

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
    let clock = transform_host::MonotonicClock::default();
    let reads = |clock: &transform_host::MonotonicClock| -> Vec<i64> {
        let services = transform_host::VmServices { monotonic: clock.clone(), ..Default::default() };
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
