//! The module under the broker's hard life: restarts with replay from the last commit, skewed
//! partitions sharing a VM, and the books that must balance whatever happens.

use std::collections::BTreeMap;

use harness::generate::{Generator, GeneratorConfig};
use integration_tests::replay::{clickstream_config, replay, Collected, Produced};
use proptest::prelude::*;
use transform_host::pipeline::{InjectedFailure, PipelineConfig, RecordTime};
use transform_host::Limits;

/// (window start, group) of a row, from its key, with its count.
fn row_key_and_count(row: &Produced) -> (String, u64) {
    let key = String::from_utf8(row.payload.key.clone().unwrap()).unwrap();
    let value: serde_json::Value = serde_json::from_slice(row.payload.value.as_deref().unwrap()).unwrap();
    (key, value["event_count"].as_u64().unwrap())
}

fn is_incomplete(row: &Produced) -> bool {
    row.header("window-incomplete").as_deref() == Some("true")
}

/// Checks the promise made to consumers: each row of a disturbed run equals a row of the undisturbed
/// run (perhaps again), or is marked incomplete with a count no larger. (A group whose events in an open
/// window all came before the resume point is not emitted for that window at all: its state died.)
fn check_against_undisturbed(undisturbed: &Collected, disturbed: &Collected) -> Result<(), TestCaseError> {
    let truth: BTreeMap<String, u64> = undisturbed.rows().map(row_key_and_count).collect();
    prop_assert_eq!(truth.len(), undisturbed.rows().count(), "the undisturbed run emits each row once");
    for row in disturbed.rows() {
        let (key, count) = row_key_and_count(row);
        let true_count = truth.get(&key).copied();
        prop_assert!(true_count.is_some(), "row {} is not in the undisturbed run", key);
        if is_incomplete(row) {
            prop_assert!(
                count <= true_count.unwrap(),
                "incomplete row {} counts {} > {}",
                key,
                count,
                true_count.unwrap()
            );
        } else {
            prop_assert_eq!(Some(count), true_count, "complete row {} differs", key);
        }
    }
    Ok(())
}

fn run(values: &[Vec<u8>], restarts: Restarts) -> Collected {
    run_on(values, restarts, 1, &[])
}

/// Injected failures: at these records, every N new records, and what they are (a VM trap, replaying the
/// failed batch after the back-off; a broker crash, replaying everything since the last flushed commit).
struct Restarts {
    at: Vec<(Option<u32>, i64)>,
    every: Option<u64>,
    kind: InjectedFailure,
}

const NONE: Restarts = Restarts { at: Vec::new(), every: None, kind: InjectedFailure::Trap };

fn kind(crash: bool) -> InjectedFailure {
    if crash {
        InjectedFailure::Crash
    } else {
        InjectedFailure::Trap
    }
}

/// Replays on `partitions` partitions sharing one VM, with extra settings.
fn run_on(values: &[Vec<u8>], restarts: Restarts, partitions: u32, extra_env: &[(&str, &str)]) -> Collected {
    let mut config = PipelineConfig { partitions, ..clickstream_config() };
    config.producer.record_time = RecordTime::Event;
    let broker = &mut config.broker;
    (broker.restart_at, broker.restart_every, broker.injected) = (restarts.at, restarts.every, restarts.kind);
    let mut env = vec![("WATERMARK_DELAY", "5s"), ("WINDOW_SIZE", "1m")];
    env.extend_from_slice(extra_env);
    let (collected, result) = replay(values.to_vec(), &env, config, Limits::default(), true);
    let stats = result.unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(
        stats.broker.restarts as usize,
        collected.logs.iter().filter(|(_, l)| l.text.contains("started:")).count() - 1
    );
    collected
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn restarts_never_pass_an_incomplete_window_off_as_complete(
        seed in 0u64..1_000,
        jitter_ms in prop_oneof![Just(0i64), 0i64..4_999],
        restart_points in prop::collection::vec(0i64..1_500, 1..4),
        restart_every in prop::option::of(200u64..700),
        crash in any::<bool>(),
    ) {
        let generator = GeneratorConfig { seed, events: 1_500, users: 8, jitter_ms, ..Default::default() };
        let values: Vec<Vec<u8>> = Generator::new(generator).collect();
        let undisturbed = run(&values, NONE);
        let at = restart_points.iter().map(|&offset| (None, offset)).collect();
        let disturbed = run(&values, Restarts { at, every: restart_every, kind: kind(crash) });
        check_against_undisturbed(&undisturbed, &disturbed)?;
    }
}

/// Two users on two partitions of one VM, alternating every `step_ms`.
fn alternating_users(events: i64, step_ms: i64) -> Vec<Vec<u8>> {
    let partition_of = |user: &str| (transform_host::producer::murmur2(user.as_bytes()) & 0x7fff_ffff) % 2;
    let users: Vec<String> = (0..).map(|i| format!("user{i}")).take(20).collect();
    let first = users.iter().find(|user| partition_of(user) == 0).expect("a user on partition 0");
    let second = users.iter().find(|user| partition_of(user) == 1).expect("a user on partition 1");
    (0..events)
        .map(|index| {
            let user = if index % 2 == 0 { first } else { second };
            let mut time = String::new();
            clickstream_aggregation::time::format_timestamp_ms(1_605_553_200_000 + index * step_ms, &mut time);
            serde_json::json!({"timestamp": time, "event": "view_item", "user_id": user, "url": "/item/1"})
                .to_string()
                .into_bytes()
        })
        .collect()
}

/// Regression (unmarked_rows_low_after_a_restart_on_a_shared_vm): a restart on a VM shared by two
/// partitions left rows of windows holding the other partition's lost events low and unmarked (498 where
/// 500 was right). It was found under the harness's old restart order (the failed partition replayed
/// seconds of records at once, ahead of the other); the restart margin marks them. Checked under both
/// restart orders the harness now models.
#[test]
fn a_restart_on_a_shared_vm_marks_every_window_it_may_have_cut() {
    let values = alternating_users(3_000, 300);
    let defaults = [("WATERMARK_DELAY", "1ms"), ("WINDOW_SIZE", "5m")];
    let undisturbed = run_on(&values, NONE, 2, &defaults);
    for crash in [false, true] {
        let restarts = Restarts { at: vec![(Some(0), 719)], every: None, kind: kind(crash) };
        let disturbed = run_on(&values, restarts, 2, &defaults);
        check_against_undisturbed(&undisturbed, &disturbed).unwrap_or_else(|error| panic!("crash {crash}: {error}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn restarts_on_shared_vms_never_pass_an_incomplete_window_off_as_complete(
        seed in 0u64..1_000,
        partitions in 2u32..5,
        restart_points in prop::collection::vec((0u32..4, 0i64..500), 1..3),
        crash in any::<bool>(),
    ) {
        let generator = GeneratorConfig { seed, events: 1_500, users: 12, jitter_ms: 1_000, ..Default::default() };
        let values: Vec<Vec<u8>> = Generator::new(generator).collect();
        let undisturbed = run_on(&values, NONE, partitions, &[]);
        let at = restart_points.iter().map(|&(partition, offset)| (Some(partition % partitions), offset)).collect();
        let disturbed = run_on(&values, Restarts { at, every: None, kind: kind(crash) }, partitions, &[]);
        check_against_undisturbed(&undisturbed, &disturbed)?;
    }
}

/// Regression (quiet_partition_batches_waited_for_their_next_record): a batch was sealed only when its
/// partition got another record, so one event on a quiet partition waited behind the other partitions'
/// records and arrived late. A producer's linger runs on its clock: the batch goes out 5 ms later.
#[test]
fn a_quiet_partition_batch_goes_out_when_its_linger_passes() {
    let mut values = alternating_users(2, 1_000); // one event on each of the two partitions
    let busy = alternating_users(400, 1_000).into_iter().skip(2).step_by(2); // then the first partition only
    values.extend(busy);
    let collected = run_on(&values, NONE, 2, &[("WATERMARK_DELAY", "1ms")]);
    let reasons: Vec<String> = collected.dead_letters().filter_map(|d| d.header("dead-letter-reason")).collect();
    assert!(reasons.is_empty(), "dead letters: {reasons:?}");
}

#[test]
fn the_books_balance_on_skewed_partitions_sharing_vms() {
    // Partition 0's producer lags six minutes behind the others, more than a window, so on shard 0
    // (partitions 0 and 2) its events are late; the stream also holds malformed, late and out-of-order records.
    let generator = GeneratorConfig {
        seed: 21,
        events: 8_000,
        users: 60,
        jitter_ms: 3_000,
        late_percent: 1.0,
        malformed_percent: 3.0,
        ..Default::default()
    };
    let lag_partition_zero = |line: Vec<u8>| -> Vec<u8> {
        let Ok(mut event) = serde_json::from_slice::<serde_json::Value>(&line) else { return line };
        let (Some(user), Some(time)) = (event["user_id"].as_str(), event["timestamp"].as_str()) else { return line };
        if !(transform_host::producer::murmur2(user.as_bytes()) & 0x7fff_ffff).is_multiple_of(4) {
            return line;
        }
        let Some(ms) = clickstream_aggregation::time::parse_timestamp_ms(time) else { return line };
        let mut lagged = String::new();
        clickstream_aggregation::time::format_timestamp_ms(ms - 360_000, &mut lagged);
        event["timestamp"] = lagged.into();
        event.to_string().into_bytes()
    };
    let values: Vec<Vec<u8>> = Generator::new(generator).map(lag_partition_zero).collect();
    let mut config = PipelineConfig { partitions: 4, ..clickstream_config() };
    config.broker.shards = 2;
    let (collected, result) = replay(values, &[], config, Limits::default(), true);
    let stats = result.unwrap_or_else(|failure| panic!("{failure}"));

    let summaries = collected.last_summaries();
    assert_eq!(summaries.len(), 2, "both shards logged a summary");
    let mut records = 0;
    for (shard, summary) in &summaries {
        let delivered = collected.delivered[*shard as usize].len() as i64;
        let dead_letters = collected.dead_letters().filter(|d| d.shard == *shard).count() as i64;
        assert_eq!(summary["records"], delivered, "shard {shard}: every delivered record was seen");
        assert_eq!(summary["counted"] + summary["heartbeats"] + summary["dead_letters"], delivered, "shard {shard}");
        assert_eq!(summary["dead_letters"], dead_letters, "shard {shard}: each dead letter was written");
        assert_eq!(summary["dead_letters_skipped"], 0);
        assert_eq!(summary["open_groups"], 0, "shard {shard}: closing every window frees every group");
        records += delivered;
    }
    assert_eq!(
        records as u64, stats.producer.records_in,
        "each input record, and the closing heartbeat of each partition"
    );
    // The lagging partition made events late on shard 0 only; the generator's late events are late everywhere.
    let late = |shard: u32| {
        collected
            .dead_letters()
            .filter(|d| d.shard == shard && d.header("dead-letter-reason").as_deref() == Some("late"))
            .count()
    };
    assert!(late(0) > 3 * late(1), "late on shard 0: {}, on shard 1: {}", late(0), late(1));
}

/// The rows of each window marked complete, by window start: (key, value) pairs, duplicates removed.
fn complete_windows(collected: &Collected) -> BTreeMap<String, std::collections::BTreeSet<(String, String)>> {
    let mut windows: BTreeMap<String, std::collections::BTreeSet<(String, String)>> = BTreeMap::new();
    for row in collected.rows().filter(|row| !is_incomplete(row)) {
        let value: serde_json::Value = serde_json::from_slice(row.payload.value.as_deref().unwrap()).unwrap();
        let (key, _) = row_key_and_count(row);
        windows.entry(value["window_start"].as_str().unwrap().to_string()).or_default().insert((key, row.value_text()));
    }
    windows
}

/// Window Top-N across restarts: a window marked complete ranks exactly as without them (the same rows
/// with the same ranks); only a window marked incomplete may rank other groups.
#[test]
fn top_n_windows_marked_complete_after_restarts_rank_as_undisturbed() {
    let env = [("TOP_N", "3"), ("TOP_N_PARTITION_BY", "event"), ("TOP_N_RANK_FIELD", "rank")];
    for seed in 0..3 {
        let generator = GeneratorConfig { seed, events: 6_000, users: 8, jitter_ms: 2_000, ..Default::default() };
        let values: Vec<Vec<u8>> = Generator::new(generator).collect();
        let truth = complete_windows(&run_on(&values, NONE, 1, &env));
        for crash in [false, true] {
            let restarts = Restarts { at: vec![(None, 1_500), (None, 3_500)], every: None, kind: kind(crash) };
            let disturbed = complete_windows(&run_on(&values, restarts, 1, &env));
            assert!(disturbed.len() > 10, "seed {seed}: {} complete windows", disturbed.len());
            for (window, rows) in &disturbed {
                assert_eq!(Some(rows), truth.get(window), "seed {seed}, crash {crash}: window {window}");
            }
        }
    }
}
