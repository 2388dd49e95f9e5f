//! The broker's failure, commit and start behaviour around the VM (`transform_manager.cc`,
//! `transform_processor.cc`, `commit_batcher.cc`, `wasm/cache.cc`), through small guests written in
//! WebAssembly text. Each guest copies every record to its output; some trap on purpose.

use harness::broker::WriteConfig;
use harness::host::{InputBatch, Limits, LogLine, TransformMeta, TransformModule, VmFailure, FUEL_PER_MS};
use harness::pipeline::{
    InjectedFailure, OutputRecord, OutputSink, Pipeline, PipelineConfig, ProducerRecord, Restart, RunStats, StartOffset,
};
use harness::record_batch::Compression;

/// A guest that writes each record's payload back as it is, and traps (`unreachable`) on the `trap_after`th
/// record of its life or on a record whose value starts with `P`.
fn copying_guest(trap_after: u32) -> TransformModule {
    amplifying_guest(trap_after, 1)
}

/// The copying guest, writing each payload `copies` times.
fn amplifying_guest(trap_after: u32, copies: u32) -> TransformModule {
    let wat = format!(
        r#"(module
  (import "redpanda_transform" "check_abi_version_2" (func $check))
  (import "redpanda_transform" "read_batch_header" (func $read_batch_header (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "redpanda_transform" "read_next_record" (func $read_next_record (param i32 i32 i32 i32 i32) (result i32)))
  (import "redpanda_transform" "write_record" (func $write_record (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $life (mut i32) (i32.const 0))
  (func (export "_start")
    (local $count i32) (local $i i32) (local $len i32) (local $copy i32)
    (call $check)
    (loop $batches
      (drop (call $read_batch_header (i32.const 0) (i32.const 8) (i32.const 12) (i32.const 16) (i32.const 20)
                                     (i32.const 24) (i32.const 32) (i32.const 40) (i32.const 48) (i32.const 52)))
      (local.set $count (i32.load (i32.const 8)))
      (local.set $i (i32.const 0))
      (block $done (loop $records
        (br_if $done (i32.ge_s (local.get $i) (local.get $count)))
        (local.set $len (call $read_next_record (i32.const 64) (i32.const 72) (i32.const 80) (i32.const 4096) (i32.const 60000)))
        (global.set $life (i32.add (global.get $life) (i32.const 1)))
        (if (i32.eq (global.get $life) (i32.const {trap_after})) (then unreachable))
        ;; no key (0x01), a value shorter than 64 bytes: its first byte is at 4098
        (if (i32.eq (i32.load8_u (i32.const 4098)) (i32.const 80)) (then unreachable))
        (local.set $copy (i32.const 0))
        (block $written (loop $copies
          (br_if $written (i32.ge_s (local.get $copy) (i32.const {copies})))
          (drop (call $write_record (i32.const 4096) (local.get $len)))
          (local.set $copy (i32.add (local.get $copy) (i32.const 1)))
          (br $copies)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $records)))
      (br $batches)))
)"#
    );
    TransformModule::load(wat.as_bytes(), Limits::default()).expect("the guest loads")
}

fn meta() -> TransformMeta {
    TransformMeta { name: "copy".into(), input_topic: "in".into(), output_topics: vec!["out".into()], env: vec![] }
}

#[derive(Default)]
struct Seen {
    /// (value, replayed) of each output record.
    outputs: Vec<(String, bool)>,
    /// (partition, offset) of each record handed to a VM, in order.
    delivered: Vec<(u32, i64)>,
    restarts: Vec<Restart>,
}

impl OutputSink for Seen {
    fn record(&mut self, record: &OutputRecord<'_>) -> anyhow::Result<()> {
        let value = String::from_utf8_lossy(record.payload.value.unwrap_or_default()).into_owned();
        self.outputs.push((value, record.replayed));
        Ok(())
    }

    fn log(&mut self, _shard: u32, _line: &LogLine) {}

    fn delivered(&mut self, _shard: u32, batch: &InputBatch) {
        self.delivered.extend(batch.records.iter().map(|record| (batch.partition, record.offset)));
    }

    fn restart(&mut self, restart: &Restart) {
        self.restarts.push(restart.clone());
    }
}

/// Record `i` of a stream one second apart: `{"t":<ms>,"i":<i>}` (values starting with `P` poison the guest).
fn value(i: i64) -> String {
    format!(r#"{{"t":{},"i":{i}}}"#, 1_000_000 + i * 1_000)
}

/// Sends `records` (value, partition) one second of record time apart and finishes the run.
fn run(
    module: TransformModule,
    config: PipelineConfig,
    records: &[(String, u32)],
) -> (Seen, Result<RunStats, VmFailure>) {
    let mut seen = Seen::default();
    let result = (|| {
        let mut pipeline = Pipeline::new(module, meta(), config, &mut seen);
        pipeline.start()?;
        for (index, (value, partition)) in records.iter().enumerate() {
            pipeline.push(ProducerRecord {
                value: Some(value.clone().into_bytes()),
                timestamp_ms: Some(1_000_000 + index as i64 * 1_000),
                partition: Some(*partition),
                ..Default::default()
            })?;
        }
        pipeline.finish()
    })();
    (seen, result)
}

fn stream(count: i64) -> Vec<(String, u32)> {
    (0..count).map(|i| (value(i), 0)).collect()
}

/// Every input value, each once, in input order.
fn each_once(seen: &Seen, records: &[(String, u32)]) {
    let outputs: Vec<&str> = seen.outputs.iter().map(|(value, _)| value.as_str()).collect();
    let inputs: Vec<&str> = records.iter().map(|(value, _)| value.as_str()).collect();
    assert_eq!(outputs, inputs);
}

/// A failure that depends on the VM's state passes after the restart: the run completes, the failed
/// partition reads again from the failed record (its commit was flushed while it waited), and the
/// back-off doubles while failures come within 10 s of the last start.
#[test]
fn a_trap_on_the_nth_record_of_a_vms_life_completes_the_run() {
    let records = stream(200);
    let (seen, result) = run(copying_guest(7), PipelineConfig::default(), &records);
    let stats = result.unwrap_or_else(|failure| panic!("{failure}"));
    each_once(&seen, &records);
    assert!(seen.restarts.len() >= 7, "{}", seen.restarts.len());
    assert_eq!(stats.restarts as usize, seen.restarts.len());
    assert_eq!(stats.replayed_outputs, 0, "a failed batch's outputs were never written, so none is written twice");
    let backoffs: Vec<i64> = seen.restarts.iter().map(|restart| restart.backoff_ms).collect();
    assert_eq!(backoffs[..7], [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
    for restart in &seen.restarts {
        assert_eq!(Some(restart.resume_from), restart.offset, "only the failed batch is read again: {restart}");
        assert_eq!(
            restart.resume_at_ms - restart.at_ms,
            restart.backoff_ms + 3_000,
            "back-off, then a commit interval"
        );
        assert!(restart.injected.is_none() && restart.reason.contains("unreachable"), "{}", restart.reason);
    }
    // The first failure is on the 7th record (offset 6); the VM that replays it starts 1 s + 3 s later.
    assert_eq!(seen.restarts[0].offset, Some(6));
    let replay = seen.delivered.iter().rposition(|&(_, offset)| offset == 6).unwrap();
    assert_eq!(seen.delivered[replay + 1..replay + 4], [(0, 7), (0, 8), (0, 9)]);
}

/// The back-off starts again at 1 s when a processor fails more than 10 s after its last start.
#[test]
fn the_back_off_resets_after_ten_healthy_seconds() {
    let records = stream(80);
    let (seen, result) = run(copying_guest(20), PipelineConfig::default(), &records);
    result.unwrap_or_else(|failure| panic!("{failure}"));
    each_once(&seen, &records);
    assert!(seen.restarts.len() >= 3);
    assert!(seen.restarts.iter().all(|restart| restart.backoff_ms == 1_000), "{:?}", seen.restarts);
}

/// A record that fails whatever the state would block its partition forever: the run stops when it fails
/// again in a fresh VM, and names it.
#[test]
fn a_poisoned_record_stops_the_run_when_it_fails_again_in_a_fresh_vm() {
    let mut records = stream(12);
    records[5].0 = "P".into();
    let (seen, result) = run(copying_guest(0), PipelineConfig::default(), &records);
    let failure = result.expect_err("blocked");
    assert_eq!(failure.record, Some((0, 5)));
    assert!(failure.reason.contains("failed 2 times, the last in a fresh VM"), "{}", failure.reason);
    assert!(failure.reason.contains("block partition 0 forever"), "{}", failure.reason);
    assert_eq!(seen.restarts.len(), 1, "one restart, then the fresh VM fails on it too");
    let outputs: Vec<&str> = seen.outputs.iter().map(|(value, _)| value.as_str()).collect();
    assert_eq!(outputs, records[..5].iter().map(|(value, _)| value.as_str()).collect::<Vec<_>>());
}

/// While the failed partition backs off, the shard's other partitions go on with the new VM; the failed
/// one reads again afterwards, from the failed record.
#[test]
fn other_partitions_go_on_while_the_failed_one_backs_off() {
    let records: Vec<(String, u32)> = (0..20).map(|i| (value(i), (i % 2) as u32)).collect();
    let config = PipelineConfig { partitions: 2, restart_at: vec![(Some(0), 3)], ..PipelineConfig::default() };
    let (seen, result) = run(copying_guest(0), config, &records);
    result.unwrap_or_else(|failure| panic!("{failure}"));
    let mut outputs: Vec<&str> = seen.outputs.iter().map(|(value, _)| value.as_str()).collect();
    outputs.sort_unstable();
    let mut inputs: Vec<&str> = records.iter().map(|(value, _)| value.as_str()).collect();
    inputs.sort_unstable();
    assert_eq!(outputs, inputs, "each record once");
    assert_eq!(seen.restarts.len(), 1);
    // Partition 0's offset 3 is record 6 (t = 6 s); it is read again at 6 + 1 + 3 = 10 s, after partition
    // 1's records at 7 and 9 s (its offsets 3 and 4).
    let second_delivery = seen.delivered.iter().rposition(|&delivered| delivered == (0, 3)).unwrap();
    let before: Vec<(u32, i64)> = seen.delivered[..second_delivery].to_vec();
    assert!(before.contains(&(1, 3)) && before.contains(&(1, 4)), "{:?}", seen.delivered);
}

/// An injected trap replays only the failed batch, so nothing is written twice; an injected broker crash
/// replays everything since the last flushed commit, and those outputs come again, identical and marked.
#[test]
fn a_crash_replays_from_the_last_flushed_commit_and_a_trap_only_the_failed_batch() {
    let records = stream(30);
    for (kind, duplicates) in [(InjectedFailure::Trap, false), (InjectedFailure::Crash, true)] {
        let config = PipelineConfig { restart_at: vec![(None, 14)], injected: kind, ..PipelineConfig::default() };
        let (seen, result) = run(copying_guest(0), config, &records);
        let stats = result.unwrap_or_else(|failure| panic!("{failure}"));
        let firsts: Vec<&str> =
            seen.outputs.iter().filter(|(_, replayed)| !replayed).map(|(v, _)| v.as_str()).collect();
        assert_eq!(firsts, records.iter().map(|(value, _)| value.as_str()).collect::<Vec<_>>(), "{kind:?}");
        let again: Vec<&str> = seen.outputs.iter().filter(|(_, replayed)| *replayed).map(|(v, _)| v.as_str()).collect();
        assert_eq!(!again.is_empty(), duplicates, "{kind:?}: {again:?}");
        assert!(again.iter().all(|value| firsts.contains(value)), "a duplicate is a copy");
        assert_eq!(stats.replayed_outputs as usize, again.len());
        // Commits flush every 3 s of record time, so a crash replays at most the 3 s before it.
        assert!(again.len() <= 3, "{kind:?}: {again:?}");
    }
}

/// Regression (restart_every_1_looped): the record an injected failure strikes was never counted as
/// delivered, so with `restart_every = 1` it struck again on every replay and the run never ended.
#[test]
fn injected_failures_strike_every_n_new_records_and_end() {
    let records = stream(12);
    for every in [1, 3] {
        let config = PipelineConfig { restart_every: Some(every), ..PipelineConfig::default() };
        let (seen, result) = run(copying_guest(0), config, &records);
        result.unwrap_or_else(|failure| panic!("{failure}"));
        each_once(&seen, &records);
        let struck: Vec<Option<i64>> = seen.restarts.iter().map(|restart| restart.offset).collect();
        let expected: Vec<Option<i64>> = (0..12).filter(|i| (i + 1) % every as i64 == 0).map(Some).collect();
        assert_eq!(struck, expected, "every {every}");
    }
}

/// A start offset inside a producer batch: the processor reads from that record, not the batch's first.
#[test]
fn a_start_offset_inside_a_batch_reads_from_that_record() {
    let mut seen = Seen::default();
    let config = PipelineConfig { from_offset: Some(StartOffset::FromStart(2)), ..PipelineConfig::default() };
    let mut pipeline = Pipeline::new(copying_guest(0), meta(), config, &mut seen);
    for i in 0..5 {
        // 1 ms apart: one producer batch (linger 5 ms).
        let record =
            ProducerRecord { value: Some(value(i).into_bytes()), timestamp_ms: Some(1_000 + i), ..Default::default() };
        pipeline.push(record).unwrap();
    }
    let stats = pipeline.finish().unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(stats.batches, 1);
    assert_eq!(seen.delivered, [(0, 2), (0, 3), (0, 4)]);
    let outputs: Vec<&str> = seen.outputs.iter().map(|(value, _)| value.as_str()).collect();
    assert_eq!(outputs, [value(2), value(3), value(4)]);
}

/// `--from-offset`: a transform deployed after its input was written starts where rpk's start options
/// point (`@T`, `+N`, `-N`).
#[test]
fn a_start_offset_picks_where_reading_starts() {
    let records = stream(10);
    let cases = [
        (StartOffset::FromStart(3), 3..10),
        (StartOffset::FromStart(30), 9..10),
        (StartOffset::FromEnd(4), 6..10),
        (StartOffset::FromEnd(40), 0..10),
        (StartOffset::Timestamp(1_005_000), 5..10),
        (StartOffset::Timestamp(2_000_000), 10..10),
    ];
    for (start, expected) in cases {
        let config = PipelineConfig { from_offset: Some(start), ..PipelineConfig::default() };
        let (seen, result) = run(copying_guest(0), config, &records);
        result.unwrap_or_else(|failure| panic!("{failure}"));
        let offsets: Vec<i64> = seen.delivered.iter().map(|&(_, offset)| offset).collect();
        assert_eq!(offsets, expected.collect::<Vec<_>>(), "{start:?}");
    }
    assert_eq!("+3".parse(), Ok(StartOffset::FromStart(3)));
    assert_eq!("-4".parse(), Ok(StartOffset::FromEnd(4)));
    assert_eq!("@1005000".parse(), Ok(StartOffset::Timestamp(1_005_000)));
    assert!("3".parse::<StartOffset>().is_err() && "+x".parse::<StartOffset>().is_err());
}

/// The broker writes what one record wrote as one batch and refuses a batch over the output topic's
/// `max.message.bytes` (1 MiB by default): a record that writes 2 MiB, or 1.5 MiB, fails its processor,
/// again in a fresh VM, so it would block its partition forever; the harness stops naming it. Compressed
/// as deployed, the same output fits.
#[test]
fn a_record_whose_outputs_exceed_the_batch_limit_blocks_its_partition() {
    // Values of 1 KiB of one letter: highly compressible.
    let records: Vec<(String, u32)> = (0..3).map(|i| (format!("{i}{}", "a".repeat(1_023)), 0)).collect();
    for copies in [2_048, 1_536] {
        let (seen, result) = run(amplifying_guest(0, copies), PipelineConfig::default(), &records);
        let failure = result.expect_err("refused");
        assert_eq!(failure.record, Some((0, 0)), "{}", failure.reason);
        assert!(failure.reason.contains(&format!("refuses a batch of {copies} records")), "{}", failure.reason);
        assert!(failure.reason.contains("over its limit of 1048576 bytes"), "{}", failure.reason);
        assert!(failure.reason.contains("block partition 0 forever"), "{}", failure.reason);
        assert_eq!(seen.restarts.len(), 1, "the processor failed, then failed again in a fresh VM");
        assert!(seen.outputs.is_empty(), "a refused batch writes nothing");

        let writes = WriteConfig { compression: Compression::Zstd, ..WriteConfig::default() };
        let (seen, result) =
            run(amplifying_guest(0, copies), PipelineConfig { writes, ..Default::default() }, &records);
        let stats = result.expect("compressed, the batches fit");
        assert_eq!(seen.outputs.len(), 3 * copies as usize);
        let (raw, stored) = stats.largest_batch[0];
        assert!(raw > 1 << 20 && stored < 64 << 10, "{raw} bytes raw, {stored} stored");
    }
}

/// While a write is in flight the VM goes on, and what it writes meanwhile joins the next batch: records
/// one second apart, each its own input batch, share output batches when a write takes longer than that.
#[test]
fn outputs_written_during_a_write_join_the_next_batch() {
    let records: Vec<(String, u32)> = (0..40).map(|i| (format!("{i:02}{}", "b".repeat(998)), 0)).collect();
    let batch_of = |latency_ms: u64| {
        let writes = WriteConfig { latency_fuel: latency_ms * FUEL_PER_MS, ..WriteConfig::default() };
        let (_, result) = run(copying_guest(0), PipelineConfig { writes, ..Default::default() }, &records);
        let stats = result.expect("fits");
        (stats.output_batches[0], stats.largest_batch[0].0)
    };
    let (batches, _) = batch_of(0);
    assert_eq!(batches, 40);
    let (fewer, largest) = batch_of(5_000);
    assert!(fewer < batches / 3, "{fewer} batches with a slow write, {batches} without");
    assert!(largest > 2 * 1_000, "{largest} bytes: several records' outputs in one batch");
}
