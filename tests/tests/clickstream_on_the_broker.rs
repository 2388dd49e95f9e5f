//! The clickstream transform's closing heartbeats and rows on the broker model: what the host's generic
//! behaviour (moves, closing) means for this transform's output.

use std::collections::{BTreeMap, BTreeSet};

use integration_tests::replay::{self as clickstream, clickstream_config, Collected};
use transform_host::broker::{BrokerConfig, WriteConfig};
use transform_host::guests::CopyingGuest;
use transform_host::pipeline::{OutputRecord, OutputSink, Pipeline, PipelineConfig, ProducerRecord};
use transform_host::{Limits, LogLine, TransformModule, FUEL_PER_MS};

/// Regression (closing_looped_on_copying_transforms): closing heartbeats repeated while a heartbeat wrote
/// two records or more, forever for a transform that writes two records per input.
#[test]
fn closing_windows_ends_for_a_transform_that_copies_each_record_twice() {
    struct Count(u64);
    impl OutputSink for Count {
        fn record(&mut self, _record: &OutputRecord<'_>) -> anyhow::Result<()> {
            self.0 += 1;
            Ok(())
        }
        fn log(&mut self, _shard: u32, _line: &LogLine) {}
    }
    let twice = CopyingGuest { copies: 2, ..CopyingGuest::default() }.wat();
    let module = TransformModule::load(twice.as_bytes(), Limits::default()).unwrap();
    let mut sink = Count(0);
    let mut pipeline = Pipeline::new(module, clickstream::meta(&[]), clickstream_config(), &mut sink);
    pipeline.start().unwrap();
    for second in 0..3 {
        let value = format!(r#"{{"timestamp":"2020-11-16 19:00:0{second}","user_id":"u"}}"#).into_bytes();
        pipeline.push(ProducerRecord { value: Some(value), ..ProducerRecord::default() }).unwrap();
    }
    pipeline.close_windows().unwrap();
    let stats = pipeline.finish().unwrap();
    assert_eq!(stats.producer.records_in, 5, "three records, then two closing heartbeats (the second wrote the same)");
    assert_eq!(sink.0, 10, "two records for each of the five");
}

/// A window's start and user.
type Window = (i64, String);

/// A row of the clickstream transform: its window, count and mark, and the shard whose VM wrote it.
#[derive(Debug)]
struct Row {
    window: Window,
    count: u64,
    marked: bool,
    shard: u32,
}

fn rows(collected: &Collected) -> Vec<Row> {
    collected
        .rows()
        .map(|row| {
            let key: Vec<String> = serde_json::from_slice(row.payload.key.as_deref().unwrap()).unwrap();
            let start = clickstream_aggregation::time::parse_timestamp_ms(&key[0]).unwrap();
            let value: serde_json::Value = serde_json::from_slice(row.payload.value.as_deref().unwrap()).unwrap();
            Row {
                window: (start, key[1].clone()),
                count: value["event_count"].as_u64().unwrap(),
                marked: row.header("window-incomplete").as_deref() == Some("true"),
                shard: row.shard,
            }
        })
        .collect()
}

/// What a move does to the rows of the moved partition's groups, with the clickstream transform. Users a, b
/// and c send an event every 100 ms on partitions 0, 1 and 2; writes take 500 ms, so the records handled
/// since the last one began are read again after the move. No row is marked `window-incomplete`: no VM
/// restarted, so the transform cannot tell.
/// - One shard: partition 0 comes back to the VM that counted those records, which counts them again:
///   the windows holding them come out too high.
/// - Two shards (partitions 0 and 2 on shard 0): shard 0's VM goes on for partition 2, keeping a's open
///   windows, and fires them with the counts up to the move; shard 1's VM counts a's records from the
///   commit on. A window open at the move gets two rows, each too low, which add up to the true count
///   plus the records read again.
#[test]
fn a_moved_partitions_rows_are_counted_twice_on_one_vm_and_split_across_two() {
    let start_ms = 1_605_553_200_000; // 2020-11-16 19:00:00
    let users = ["a", "b", "c"];
    let mut records = Vec::new();
    for index in 0..1_800 {
        let mut time = String::new();
        clickstream_aggregation::time::format_timestamp_ms(start_ms + index * 100, &mut time);
        for (partition, user) in users.iter().enumerate() {
            let value = format!(r#"{{"timestamp":"{time}","event":"view","user_id":"{user}","url":"/"}}"#);
            records.push((partition as u32, value.into_bytes(), start_ms + index * 100));
        }
    }
    let writes = WriteConfig { latency_fuel: 500 * FUEL_PER_MS, ..WriteConfig::default() };
    let run = |shards: u32, move_at: Vec<(u32, i64)>| -> Collected {
        let mut collected = Collected::default();
        let meta = clickstream::meta(&[("WINDOW_SIZE", "1m"), ("WATERMARK_DELAY", "10s")]);
        let mut config = PipelineConfig { partitions: 3, ..clickstream_config() };
        config.broker = BrokerConfig { shards, move_at, writes, ..config.broker };
        let mut pipeline = Pipeline::new(clickstream::module(Limits::default()), meta, config, &mut collected);
        pipeline.start().unwrap();
        for (partition, value, timestamp_ms) in &records {
            let record = ProducerRecord {
                value: Some(value.clone()),
                timestamp_ms: Some(*timestamp_ms),
                partition: Some(*partition),
                ..Default::default()
            };
            pipeline.push(record).unwrap();
        }
        assert_eq!(pipeline.close_windows().unwrap(), 0);
        pipeline.finish().unwrap_or_else(|failure| panic!("{failure}"));
        collected
    };
    let truth: BTreeMap<Window, Row> =
        rows(&run(1, Vec::new())).into_iter().map(|row| (row.window.clone(), row)).collect();
    // Event times of a's records handed to a VM twice (to the same one, or to both), from what the VMs got.
    let read_again = |collected: &Collected| -> Vec<i64> {
        let mut seen = BTreeSet::new();
        let mut again = Vec::new();
        for (value, timestamp_ms) in collected.delivered.iter().flatten() {
            let is_a = value.as_deref().is_some_and(|value| value.windows(13).any(|w| w == br#""user_id":"a""#));
            if is_a && !seen.insert(*timestamp_ms) {
                again.push(*timestamp_ms);
            }
        }
        again
    };
    let in_window = |times: &[i64], start: i64| times.iter().filter(|&&t| start <= t && t < start + 60_000).count();
    // Partition 0's offset 903 is a's event at 90.3 s, 300 ms into a write.
    for shards in [1, 2] {
        let collected = run(shards, vec![(0, 903)]);
        let again = read_again(&collected);
        // The write that began at 90 s holds a's records of 90.1 and 90.2 s: they are read again.
        assert_eq!(again, [start_ms + 90_100, start_ms + 90_200], "{shards} shards");
        let mut by_window: BTreeMap<Window, Vec<Row>> = BTreeMap::new();
        for row in rows(&collected) {
            by_window.entry(row.window.clone()).or_default().push(row);
        }
        by_window.values_mut().for_each(|found| found.sort_by_key(|row| row.shard));
        assert_eq!(by_window.keys().collect::<Vec<_>>(), truth.keys().collect::<Vec<_>>(), "{shards} shards");
        let mut off = 0;
        for (window, found) in &by_window {
            let true_count = truth[window].count;
            let counts: Vec<u64> = found.iter().map(|row| row.count).collect();
            if window.1 != "a" {
                assert_eq!(counts, [true_count], "{shards} shards: {window:?}");
                continue;
            }
            // Every record of a is counted once, and those read again once more.
            let extra = in_window(&again, window.0) as u64;
            assert_eq!(counts.iter().sum::<u64>(), true_count + extra, "{shards} shards: {found:?}");
            if counts != [true_count] {
                off += 1;
                assert!(!truth[window].marked && found.iter().all(|row| !row.marked), "{found:?}");
                if shards == 1 {
                    assert!(counts[0] > true_count, "{found:?}");
                } else {
                    let shards: Vec<u32> = found.iter().map(|row| row.shard).collect();
                    assert_eq!(shards, [0, 1], "{found:?}");
                    assert!(counts.iter().all(|&count| count < true_count), "{found:?}");
                }
            }
        }
        // The six windows holding 90.1 and 90.2 s, which are also the six open at the move: on one shard
        // 602 where 600 is right; on two, 503 and 99 for the window of 40 s, down to 3 and 599 for 90 s.
        assert_eq!(off, 6, "{shards} shards");
    }
}
