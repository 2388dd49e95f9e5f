//! The broker's failure, commit and start behaviour around the VM (`transform_manager.cc`,
//! `transform_processor.cc`, `commit_batcher.cc`, `wasm/cache.cc`), through small guests written in
//! WebAssembly text. Each guest copies every record to its output; some trap on purpose.

use transform_host::broker::{BrokerConfig, WriteConfig};
use transform_host::guests::CopyingGuest;
use transform_host::pipeline::{
    InjectedFailure, Move, OutputRecord, OutputSink, Pipeline, PipelineConfig, ProducerRecord, Restart, RunStats,
    StartOffset,
};
use transform_host::record_batch::Compression;
use transform_host::{InputBatch, Limits, LogLine, TransformMeta, TransformModule, VmFailure, FUEL_PER_MS};

/// The copying guest, trapping on the `trap_after`th record of its life (0: never) and on values starting
/// with `P`.
fn copying_guest(trap_after: u32) -> TransformModule {
    guest(trap_after, 1, 0)
}

/// The copying guest, writing each payload `copies` times.
fn amplifying_guest(trap_after: u32, copies: u32) -> TransformModule {
    guest(trap_after, copies, 0)
}

/// The copying guest, writing each payload `copies` times, then spinning `spins` times (about four units
/// of fuel each) before the next record.
fn guest(trap_after: u32, copies: u32, spins: u32) -> TransformModule {
    let trap_after = (trap_after > 0).then_some(trap_after);
    let wat = CopyingGuest { copies, spins, trap_after, trap_on_p: true }.wat();
    TransformModule::load(wat.as_bytes(), Limits::default()).expect("the guest loads")
}

/// One partition, the broker as `config` says.
fn broker(config: BrokerConfig) -> PipelineConfig {
    PipelineConfig { broker: config, ..PipelineConfig::default() }
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
    /// The same, with the shard whose VM it was handed to first.
    delivered_to: Vec<(u32, u32, i64)>,
    restarts: Vec<Restart>,
    moves: Vec<Move>,
}

impl OutputSink for Seen {
    fn record(&mut self, record: &OutputRecord<'_>) -> anyhow::Result<()> {
        let value = String::from_utf8_lossy(record.payload.value.unwrap_or_default()).into_owned();
        self.outputs.push((value, record.replayed));
        Ok(())
    }

    fn log(&mut self, _shard: u32, _line: &LogLine) {}

    fn delivered(&mut self, shard: u32, batch: &InputBatch) {
        self.delivered.extend(batch.records.iter().map(|record| (batch.partition, record.offset)));
        self.delivered_to.extend(batch.records.iter().map(|record| (shard, batch.partition, record.offset)));
    }

    fn restart(&mut self, restart: &Restart) {
        self.restarts.push(restart.clone());
    }

    fn moved(&mut self, moved: &Move) {
        self.moves.push(moved.clone());
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
    run_spaced(module, config, records, 1_000)
}

/// Sends `records` (value, partition) `step_ms` of record time apart and finishes the run.
fn run_spaced(
    module: TransformModule,
    config: PipelineConfig,
    records: &[(String, u32)],
    step_ms: i64,
) -> (Seen, Result<RunStats, VmFailure>) {
    let times: Vec<i64> = (0..records.len() as i64).map(|index| index * step_ms).collect();
    run_timed(module, config, records, &times)
}

/// Sends `records` (value, partition), each at its time (ms of record time after the first), and finishes
/// the run.
fn run_timed(
    module: TransformModule,
    config: PipelineConfig,
    records: &[(String, u32)],
    times_ms: &[i64],
) -> (Seen, Result<RunStats, VmFailure>) {
    let mut seen = Seen::default();
    let result = (|| {
        let mut pipeline = Pipeline::new(module, meta(), config, &mut seen);
        pipeline.start()?;
        for ((value, partition), time_ms) in records.iter().zip(times_ms) {
            pipeline.push(ProducerRecord {
                value: Some(value.clone().into_bytes()),
                timestamp_ms: Some(1_000_000 + time_ms),
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
/// partition reads again from its last commit (flushed while it waited), and the back-off doubles while
/// failures come within 10 s of the last start.
#[test]
fn a_trap_on_the_nth_record_of_a_vms_life_completes_the_run() {
    let records = stream(200);
    let (seen, result) = run(copying_guest(7), PipelineConfig::default(), &records);
    let stats = result.unwrap_or_else(|failure| panic!("{failure}"));
    each_once(&seen, &records);
    assert!(seen.restarts.len() >= 7, "{}", seen.restarts.len());
    assert_eq!(stats.broker.restarts as usize, seen.restarts.len());
    assert_eq!(
        stats.broker.written_again, 0,
        "nothing of a failed batch of one record was written, so none is written twice"
    );
    let backoffs: Vec<i64> = seen.restarts.iter().map(|restart| restart.backoff_ms).collect();
    assert_eq!(backoffs[..7], [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
    for restart in &seen.restarts {
        assert!(restart.offset.is_some_and(|offset| restart.resume_from <= offset), "{restart}");
        assert_eq!(
            restart.resume_at_ms - restart.at_ms,
            restart.backoff_ms + 3_000,
            "back-off, then a commit interval"
        );
        assert!(restart.injected.is_none() && restart.reason.contains("unreachable"), "{}", restart.reason);
    }
    // The first failures strike records that came 1 s after the one before, whose outputs were written and
    // commit queued meanwhile: only the failed batch is read again. The fourth strikes offset 24 in the
    // backlog the third restart read at once (18 to 25): 19 to 23 were handled while the 5 ms write of 18's
    // outputs was in flight, so their outputs and commits were still queued, dropped with the processor,
    // and they are read again too (written once: nothing of them had been written).
    let resumes: Vec<(Option<i64>, i64)> = seen.restarts[..4].iter().map(|r| (r.offset, r.resume_from)).collect();
    assert_eq!(resumes, [(Some(6), 6), (Some(12), 12), (Some(18), 18), (Some(24), 19)]);
    // The VM that replays the first failed record starts 1 s + 3 s later.
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
    let config = PipelineConfig {
        partitions: 2,
        broker: BrokerConfig { restart_at: vec![(Some(0), 3)], ..BrokerConfig::default() },
        ..PipelineConfig::default()
    };
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
        let config = broker(BrokerConfig { restart_at: vec![(None, 14)], injected: kind, ..BrokerConfig::default() });
        let (seen, result) = run(copying_guest(0), config, &records);
        let stats = result.unwrap_or_else(|failure| panic!("{failure}"));
        let firsts: Vec<&str> =
            seen.outputs.iter().filter(|(_, replayed)| !replayed).map(|(v, _)| v.as_str()).collect();
        assert_eq!(firsts, records.iter().map(|(value, _)| value.as_str()).collect::<Vec<_>>(), "{kind:?}");
        let again: Vec<&str> = seen.outputs.iter().filter(|(_, replayed)| *replayed).map(|(v, _)| v.as_str()).collect();
        assert_eq!(!again.is_empty(), duplicates, "{kind:?}: {again:?}");
        assert!(again.iter().all(|value| firsts.contains(value)), "a duplicate is a copy");
        assert_eq!(stats.broker.written_again as usize, again.len());
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
        let config = broker(BrokerConfig { restart_every: Some(every), ..BrokerConfig::default() });
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
    let config = broker(BrokerConfig { from_offset: Some(StartOffset::FromStart(2)), ..BrokerConfig::default() });
    let mut pipeline = Pipeline::new(copying_guest(0), meta(), config, &mut seen);
    for i in 0..5 {
        // 1 ms apart: one producer batch (linger 5 ms).
        let record =
            ProducerRecord { value: Some(value(i).into_bytes()), timestamp_ms: Some(1_000 + i), ..Default::default() };
        pipeline.push(record).unwrap();
    }
    let stats = pipeline.finish().unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(stats.producer.batches, 1);
    assert_eq!(seen.delivered, [(0, 2), (0, 3), (0, 4)]);
    let outputs: Vec<&str> = seen.outputs.iter().map(|(value, _)| value.as_str()).collect();
    assert_eq!(outputs, [value(2), value(3), value(4)]);
}

/// `--from-offset`: a transform deployed after its input was written starts where rpk's start options
/// point (`@T`, `+N`, `-N`). `-N` commits `max(last offset − N, log start)` and reads after it, so when N
/// reaches back to the log start or past it the first record is not read (`load_latest_committed`).
#[test]
fn a_start_offset_picks_where_reading_starts() {
    let records = stream(10);
    let cases = [
        (StartOffset::FromStart(3), 3..10),
        (StartOffset::FromStart(30), 9..10),
        (StartOffset::FromEnd(4), 6..10),
        (StartOffset::FromEnd(9), 1..10),
        (StartOffset::FromEnd(10), 1..10),
        (StartOffset::FromEnd(40), 1..10),
        (StartOffset::Timestamp(1_005_000), 5..10),
        (StartOffset::Timestamp(2_000_000), 10..10),
    ];
    for (start, expected) in cases {
        let config = broker(BrokerConfig { from_offset: Some(start), ..BrokerConfig::default() });
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
            run(amplifying_guest(0, copies), broker(BrokerConfig { writes, ..BrokerConfig::default() }), &records);
        let stats = result.expect("compressed, the batches fit");
        assert_eq!(seen.outputs.len(), 3 * copies as usize);
        let (raw, stored) = stats.broker.largest_batch[0];
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
        let (_, result) = run(copying_guest(0), broker(BrokerConfig { writes, ..BrokerConfig::default() }), &records);
        let stats = result.expect("fits");
        (stats.broker.output_batches[0], stats.broker.largest_batch[0].0)
    };
    let (batches, _) = batch_of(0);
    assert_eq!(batches, 40);
    let (fewer, largest) = batch_of(5_000);
    assert!(fewer < batches / 3, "{fewer} batches with a slow write, {batches} without");
    assert!(largest > 2 * 1_000, "{largest} bytes: several records' outputs in one batch");
}

/// The broker's producer loops write at the VM's yields (every millisecond of fuel), so what a batch's
/// first records wrote can be in the output topic when a later record of the batch traps: it stays there,
/// and the replay from the last commit (before the batch) writes it again, counted as written again. What
/// a loop still held, queued behind a write in flight, is dropped with the processor and written once.
#[test]
fn outputs_written_before_a_trap_stay_written_and_the_replay_writes_them_again() {
    // Five records a millisecond apart make one producer batch; each record spins about 2 ms of fuel after
    // writing its copy, so the VM yields between records. The trap strikes at the fourth.
    let records = stream(5);
    for (latency_ms, written_before) in [(0, 3), (100, 1)] {
        let writes = WriteConfig { latency_fuel: latency_ms * FUEL_PER_MS, ..WriteConfig::default() };
        let config = broker(BrokerConfig { restart_at: vec![(Some(0), 3)], writes, ..BrokerConfig::default() });
        let (seen, result) = run_spaced(guest(0, 1, 1_000_000), config, &records, 1);
        let stats = result.unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(stats.producer.batches, 1);
        assert_eq!(seen.restarts.len(), 1);
        assert_eq!(seen.restarts[0].resume_from, 0, "nothing of the batch was committed");
        let mut expected: Vec<(String, bool)> = (0..written_before).map(|i| (value(i), false)).collect();
        expected.extend((0..5).map(|i| (value(i), i < written_before)));
        assert_eq!(seen.outputs, expected, "write latency {latency_ms} ms");
        assert_eq!(stats.broker.written_again, written_before as u64);
    }
}

/// Record times of the real-trap tests: two records, then a second later a batch of five.
const TWO_THEN_A_BATCH_MS: [i64; 7] = [0, 1, 1_000, 1_001, 1_002, 1_003, 1_004];

/// The same for a real trap: the VM's outputs before it are written at its yields as an injected trap's.
/// The first VM handles two records a second before the batch, so the trap on the sixth record of its life
/// strikes the batch's fourth (offset 5); the fresh VM that replays the batch from the commit before it
/// (offset 2) never reaches a sixth record.
#[test]
fn outputs_written_before_a_real_trap_stay_written_and_the_replay_writes_them_again() {
    let records = stream(7);
    let times = TWO_THEN_A_BATCH_MS;
    for (latency_ms, written_before) in [(0, 3), (5, 2)] {
        let writes = WriteConfig { latency_fuel: latency_ms * FUEL_PER_MS, ..WriteConfig::default() };
        let config = broker(BrokerConfig { writes, ..BrokerConfig::default() });
        let (seen, result) = run_timed(guest(6, 1, 1_000_000), config, &records, &times);
        let stats = result.unwrap_or_else(|failure| panic!("{failure}"));
        let [restart] = &seen.restarts[..] else { panic!("{:?}", seen.restarts) };
        assert!(restart.reason.contains("unreachable"), "{restart}");
        assert_eq!((restart.offset, restart.resume_from), (Some(5), 2), "{restart}");
        let mut expected: Vec<(String, bool)> = (0..2 + written_before).map(|i| (value(i), false)).collect();
        expected.extend((2..7).map(|i| (value(i), i < 2 + written_before)));
        assert_eq!(seen.outputs, expected, "write latency {latency_ms} ms");
        assert_eq!(stats.broker.written_again, written_before as u64);
    }
}

/// Regression (a_trap_after_a_good_batch_looped): a batch that succeeded before the failing record cleared
/// its failure count, so a record that fails whenever the replay reaches it after an earlier batch (in a VM
/// that is then not fresh) failed again and again and the run never ended. With 100 ms writes the commit of
/// the first two records is not flushed by the trap, so every replay starts at offset 0, and the sixth record
/// of each VM's life is offset 5 again.
#[test]
fn a_record_that_fails_on_every_replay_blocks_its_partition_even_after_good_batches() {
    let records = stream(7);
    let times = TWO_THEN_A_BATCH_MS;
    let writes = WriteConfig { latency_fuel: 100 * FUEL_PER_MS, ..WriteConfig::default() };
    let config = broker(BrokerConfig { writes, ..BrokerConfig::default() });
    let (seen, result) = run_timed(guest(6, 1, 1_000_000), config, &records, &times);
    let failure = result.expect_err("blocked");
    assert_eq!(failure.record, Some((0, 5)));
    assert!(failure.reason.contains("failed 100 times, the harness's limit"), "{}", failure.reason);
    assert_eq!(seen.restarts.len(), 99);
    assert!(seen.restarts.iter().all(|restart| restart.resume_from == 0), "{:?}", &seen.restarts[..2]);
}

/// Every processor start waits one commit interval for earlier commits to flush before it reads, the first
/// one included (`load_latest_committed` calls `wait_for_previous_flushes` before anything else): records
/// of the first 3 s of record time are read only once the broker's clock has passed them.
#[test]
fn the_first_start_waits_a_commit_interval_before_reading() {
    let mut seen = Seen::default();
    let mut pipeline = Pipeline::new(copying_guest(0), meta(), PipelineConfig::default(), &mut seen);
    pipeline.start().unwrap();
    let mut deliveries = Vec::new();
    for i in 0..6 {
        let record = ProducerRecord {
            value: Some(value(i).into_bytes()),
            timestamp_ms: Some(1_000_000 + i * 1_000),
            ..Default::default()
        };
        pipeline.push(record).unwrap();
        deliveries.push(pipeline.stats().broker.deliveries);
    }
    // A batch reaches the broker when the next record ends its linger: the one of t = 3 s when the record
    // of t = 4 s is sent, and the processor then reads the four records that wait.
    assert_eq!(deliveries, [0, 0, 0, 0, 4, 5]);
    pipeline.finish().unwrap_or_else(|failure| panic!("{failure}"));
    let records = stream(6);
    each_once(&seen, &records);
}

/// A leadership move stops the partition's processor and starts one on the new shard at once
/// (`manager::handle_leadership_change`); it waits one commit interval, in which the old processor's queued
/// commits flush, then reads again from the last of them on that shard's VM. So what is read again is what
/// the old processor handled but had not written: outputs queued behind a write in flight, dropped with it
/// and written once now. No VM restarts: the new shard's VM is the one its partitions share (`wasm/cache.cc`:
/// one engine per core, started by the first processor and stopped by the last), and with one shard the
/// partition comes back to the VM that already counted the records it reads again.
#[test]
fn a_moved_partition_reads_again_what_it_had_not_written_on_the_new_shards_vm() {
    // Two partitions alternating, a record a second: partition 0's offset 5 is record 10, at 10 s. Writes
    // take 4.5 s, so a batch's outputs can wait behind the write of an earlier one.
    let records: Vec<(String, u32)> = (0..24).map(|i| (value(i), (i % 2) as u32)).collect();
    let writes = WriteConfig { latency_fuel: 4_500 * FUEL_PER_MS, ..WriteConfig::default() };
    for shards in [2, 1] {
        let config = PipelineConfig {
            partitions: 2,
            broker: BrokerConfig { shards, move_at: vec![(0, 5)], writes, ..BrokerConfig::default() },
            ..PipelineConfig::default()
        };
        let (seen, result) = run(copying_guest(0), config, &records);
        let stats = result.unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!((stats.broker.moves, stats.broker.restarts), (1, 0));
        let [moved] = &seen.moves[..] else { panic!("{:?}", seen.moves) };
        assert_eq!((moved.from_shard, moved.to_shard), (0, shards - 1));
        assert!(moved.new_vm_shared, "{moved}");
        // On two shards partition 0 was alone on shard 0, whose VM stops; on one, partition 1 keeps it.
        assert_eq!(moved.old_vm_kept, shards == 1, "{moved}");
        assert_eq!(moved.resume_at_ms - moved.at_ms, 3_000);
        // Offset 4 (8 s) was handled while the outputs of offsets 1 to 3 were being written: its own were
        // still queued at the move, so it is read again.
        assert_eq!(moved.resume_from, 4, "{moved}");
        let on_shard = |shard: u32| -> Vec<i64> {
            seen.delivered_to.iter().filter(|&&(s, p, _)| s == shard && p == 0).map(|&(_, _, offset)| offset).collect()
        };
        if shards == 2 {
            assert_eq!(on_shard(0), (0..5).collect::<Vec<_>>());
            assert_eq!(on_shard(1), (4..12).collect::<Vec<_>>());
        } else {
            // The VM that counted offset 4 is handed it again.
            assert_eq!(on_shard(0), (0..5).chain(4..12).collect::<Vec<_>>());
        }
        // Nothing of offset 4 had been written: every copy is written once.
        assert_eq!(stats.broker.written_again, 0);
        let mut outputs: Vec<&str> = seen.outputs.iter().map(|(value, _)| value.as_str()).collect();
        outputs.sort_unstable();
        let mut inputs: Vec<&str> = records.iter().map(|(value, _)| value.as_str()).collect();
        inputs.sort_unstable();
        assert_eq!(outputs, inputs);
    }
}
