//! What the host's conformance tests share: a probe guest written in WebAssembly text that runs the SDK's
//! loop (`read_batch_header`, then per record `read_next_record` and an action whose i64 result it writes as
//! the value of one output record: key null, 8-byte value), and ways to run it.
#![allow(dead_code)] // each test file uses a part

use std::sync::Arc;

use transform_host::wire::{encode_payload, Payload};
use transform_host::{
    BatchOutput, BatchRecord, InputBatch, Limits, LogLevel, TransformMeta, TransformModule, Vm, VmFailure,
};

pub const IMPORTS: &str = r#"
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
pub fn guest(setup: &str, action: &str, extra: &str) -> String {
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

pub fn meta() -> TransformMeta {
    TransformMeta {
        name: "probe".into(),
        input_topic: "in".into(),
        output_topics: vec!["out".into(), "side".into()],
        env: vec![("GREETING".into(), "hello".into())],
    }
}

pub fn load(wat: &str, limits: Limits) -> anyhow::Result<TransformModule> {
    TransformModule::load(wat.as_bytes(), limits)
}

pub fn batch(timestamps: &[i64]) -> Arc<InputBatch> {
    let payload = encode_payload(&Payload { key: Some(b"k".to_vec()), value: Some(b"v".to_vec()), headers: vec![] });
    let records = timestamps
        .iter()
        .enumerate()
        .map(|(i, &timestamp_ms)| BatchRecord { offset: 100 + i as i64, timestamp_ms, payload: payload.clone() })
        .collect();
    Arc::new(InputBatch { partition: 3, records })
}

/// Runs one batch and returns each output record's i64 value (outputs to the first topic only).
pub fn results(wat: &str, limits: Limits, timestamps: &[i64]) -> Result<Vec<i64>, VmFailure> {
    let module = load(wat, limits).unwrap();
    let (mut vm, _) = Vm::start(&module, &meta())?;
    let output = vm.transform(batch(timestamps))?;
    Ok(output
        .records()
        .filter(|(topic, _)| *topic == 0)
        .map(|(_, payload)| i64::from_le_bytes(payload.value.unwrap().try_into().unwrap()))
        .collect())
}

pub fn result(action: &str) -> i64 {
    results(&guest("", action, ""), Limits::default(), &[1_000]).unwrap_or_else(|failure| panic!("{failure}"))[0]
}

pub fn result_with_extra(extra: &str, action: &str) -> i64 {
    results(&guest("", action, extra), Limits::default(), &[0]).unwrap()[0]
}

/// Writes `bytes` at 256 and returns the `data` segment that does so.
pub fn data(bytes: &[u8]) -> String {
    data_at(256, bytes)
}

/// The `data` segment that writes `bytes` at `at`.
pub fn data_at(at: u32, bytes: &[u8]) -> String {
    let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
    format!("(data (i32.const {at}) \"{escaped}\")")
}

/// Runs a guest over a batch of one record and returns what the batch produced.
pub fn output(action: &str, extra: &str) -> BatchOutput {
    let module = load(&guest("", action, extra), Limits::default()).unwrap();
    let (mut vm, _) = Vm::start(&module, &meta()).unwrap();
    vm.transform(batch(&[0])).unwrap()
}

/// Runs a guest and returns its log lines.
pub fn logs(action: &str, extra: &str) -> Vec<(LogLevel, String)> {
    output(action, extra).logs.into_iter().map(|line| (line.level, line.text)).collect()
}

/// Where `report` builds its extra output record, in the scratch area: 512..580, keep guest data out of it.
pub const REPORT_AT: usize = 512;

/// An action that evaluates each i32 expression in order and writes their values, little-endian, as the
/// value of one extra output record (before the loop's own); `reported` reads them back.
pub fn report(exprs: &[&str]) -> String {
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
pub fn reported(output: &BatchOutput) -> Vec<i32> {
    let (_, payload) = output.records().next().expect("the report record");
    let value = payload.value.expect("a value");
    value.chunks_exact(4).map(|chunk| i32::from_le_bytes(chunk.try_into().unwrap())).collect()
}
