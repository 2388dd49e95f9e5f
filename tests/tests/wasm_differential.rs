//! The compiled module in the harness against the native aggregator and the reference model, row for
//! row, on generated streams: in order, out of order, late, malformed, several partitions and shards.

use clickstream_aggregation::aggregator::{Aggregator, Output};
use clickstream_aggregation::config::Config;
use clickstream_aggregation::dead_letter::Reason;
use harness::generate::{Generator, GeneratorConfig};
use integration_tests::reference::{row_from_json, RefRow, Reference, ReferenceConfig};
use integration_tests::replay::{clickstream_config, meta, replay, Collected};
use transform_host::pipeline::PipelineConfig;
use transform_host::Limits;

/// The rows the native aggregator writes for what one shard's VM was given.
fn native_rows(env: &[(&str, &str)], delivered: &[(Option<Vec<u8>>, i64)]) -> Vec<(String, bool, bool)> {
    struct Rows(Vec<(String, bool, bool)>);
    impl Output for Rows {
        fn row(&mut self, _key: &[u8], value: &[u8], incomplete: bool, early: bool) {
            self.0.push((String::from_utf8(value.to_vec()).unwrap(), incomplete, early));
        }
        fn dead_letter(&mut self, _topic: &str, _reason: Reason, _detail: &str, _keep_value: bool) {}
        fn log(&mut self, _line: &str) {}
    }
    let vars = meta(env).environment();
    let config = Config::from_env(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())).unwrap();
    let mut aggregator = Aggregator::new(config);
    let mut rows = Rows(Vec::new());
    for (value, record_ms) in delivered {
        aggregator.on_record(value.as_deref(), *record_ms, &mut rows);
    }
    rows.0
}

fn reference_rows(config: &ReferenceConfig, delivered: &[(Option<Vec<u8>>, i64)]) -> Vec<RefRow> {
    let mut reference = Reference::new(config.clone());
    for (value, record_ms) in delivered {
        reference.on_record(value.as_deref(), *record_ms);
    }
    reference.rows
}

fn check(generator: GeneratorConfig, env: &[(&str, &str)], partitions: u32, shards: u32) -> Collected {
    check_values(Generator::new(generator).collect(), env, partitions, shards)
}

fn check_values(values: Vec<Vec<u8>>, env: &[(&str, &str)], partitions: u32, shards: u32) -> Collected {
    let mut pipeline = PipelineConfig { partitions, ..clickstream_config() };
    pipeline.broker.shards = shards;
    let records = values.len();
    let (collected, result) = replay(values, env, pipeline, Limits::default(), true);
    let stats = result.unwrap_or_else(|failure| panic!("the module failed: {failure}"));
    // Closing heartbeats repeat while they write rows: at least one per partition, then the summary one.
    assert!(
        stats.producer.records_in as usize >= records + 2 * partitions as usize,
        "input, then at least two heartbeats per partition: {} records for {records}",
        stats.producer.records_in
    );

    let meta = meta(env);
    let reference = ReferenceConfig::from_env(|name| meta.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
    let mut total_rows = 0;
    for (shard, delivered) in collected.delivered.iter().enumerate() {
        let wasm: Vec<(String, bool, bool)> = collected
            .rows()
            .filter(|row| row.shard == shard as u32)
            .map(|row| {
                let marked = |header| row.header(header).is_some();
                (row.value_text(), marked("window-incomplete"), marked("window-early"))
            })
            .collect();
        let native = native_rows(env, delivered);
        assert_eq!(wasm.len(), native.len(), "shard {shard}: row counts, wasm vs native");
        if let Some(at) = wasm.iter().zip(&native).position(|(wasm, native)| wasm != native) {
            panic!("shard {shard}: row {at} differs\n  wasm:   {:?}\n  native: {:?}", wasm[at], native[at]);
        }
        let as_reference: Vec<RefRow> = wasm
            .iter()
            .map(|(value, incomplete, early)| row_from_json(value.as_bytes(), &reference, *incomplete, *early))
            .collect();
        let expected = reference_rows(&reference, delivered);
        assert_eq!(as_reference.len(), expected.len(), "shard {shard}: row counts, wasm vs reference");
        if let Some(at) = as_reference.iter().zip(&expected).position(|(wasm, reference)| wasm != reference) {
            panic!(
                "shard {shard}: row {at} differs\n  wasm:      {:?}\n  reference: {:?}",
                as_reference[at], expected[at]
            );
        }
        total_rows += wasm.len();
    }
    assert!(total_rows > 0, "the stream produced rows");
    collected
}

#[test]
fn in_order_stream_one_partition() {
    check(GeneratorConfig { events: 4_000, users: 30, ..Default::default() }, &[], 1, 1);
}

#[test]
fn out_of_order_and_late_stream() {
    let generator =
        GeneratorConfig { events: 4_000, jitter_ms: 20_000, late_percent: 2.0, seed: 3, ..Default::default() };
    let collected = check(generator, &[("WATERMARK_DELAY", "5s")], 1, 1);
    assert!(collected.dead_letters().any(|d| d.header("dead-letter-reason").as_deref() == Some("late")));
}

#[test]
fn malformed_records_mixed_in() {
    let generator =
        GeneratorConfig { events: 4_000, malformed_percent: 10.0, jitter_ms: 2_000, seed: 5, ..Default::default() };
    let collected = check(generator, &[], 1, 1);
    let reasons: std::collections::BTreeSet<String> =
        collected.dead_letters().filter_map(|d| d.header("dead-letter-reason")).collect();
    for reason in
        ["not_json", "missing_field", "bad_timestamp", "not_object", "wrong_type", "invalid_utf8", "too_deep", "future"]
    {
        assert!(reasons.contains(reason), "no {reason} among {reasons:?}");
    }
}

#[test]
fn several_partitions_and_shards_share_vms() {
    let generator = GeneratorConfig {
        events: 6_000,
        users: 80,
        jitter_ms: 3_000,
        late_percent: 1.0,
        seed: 9,
        ..Default::default()
    };
    let collected = check(generator, &[], 4, 2);
    assert_eq!(collected.delivered.len(), 2);
    let partitions: std::collections::BTreeSet<u32> = collected.rows().map(|row| row.partition).collect();
    assert_eq!(partitions.len(), 4, "rows land in output partition = input partition mod 4");
    assert!(collected.rows().all(|row| row.partition % 2 == row.shard));
}

#[test]
fn tumbling_windows_grouped_by_site() {
    let generator = GeneratorConfig { events: 3_000, jitter_ms: 1_000, seed: 11, ..Default::default() };
    check(generator, &[("WINDOW_SIZE", "1m"), ("WINDOW_SLIDE", "1m"), ("GROUP_BY", "site_id,event")], 2, 1);
}

#[test]
fn cumulating_windows_with_disorder_and_late_events() {
    let generator = GeneratorConfig {
        events: 4_000,
        users: 40,
        jitter_ms: 30_000,
        late_percent: 2.0,
        seed: 23,
        ..Default::default()
    };
    let env = [
        ("WINDOW", "cumulate"),
        ("WINDOW_SIZE", "2m"),
        ("WINDOW_STEP", "20s"),
        ("WATERMARK_DELAY", "10s"),
        ("GROUP_BY", "event,url"),
        ("AGGREGATES", "n=count,users=count_distinct(user_id),p90=percentile(on_site_seconds, 0.9)"),
    ];
    check(generator, &env, 3, 2);
}

#[test]
fn sessions_with_disorder_and_late_events() {
    let generator = GeneratorConfig {
        events: 4_000,
        users: 60,
        rate_per_sec: 5.0,
        jitter_ms: 20_000,
        late_percent: 2.0,
        seed: 31,
        ..Default::default()
    };
    let env = [
        ("WINDOW", "session"),
        ("SESSION_GAP", "15s"),
        ("WATERMARK_DELAY", "5s"),
        ("GROUP_BY", "user_id"),
        (
            "AGGREGATES",
            "n=count,pages=approx_count_distinct(url),p50=median(on_site_seconds),longest=max(on_site_seconds)",
        ),
    ];
    check(generator, &env, 3, 2);
}

#[test]
fn early_rows_every_twenty_seconds() {
    let generator = GeneratorConfig {
        events: 3_000,
        users: 30,
        jitter_ms: 10_000,
        late_percent: 1.0,
        seed: 37,
        ..Default::default()
    };
    let env = [
        ("EMIT_EARLY", "20s"),
        ("WATERMARK_DELAY", "5s"),
        ("GROUP_BY", "user_id"),
        ("AGGREGATES", "n=count,users=count_distinct(url)"),
    ];
    let collected = check(generator, &env, 2, 1);
    assert!(collected.rows().any(|row| row.header("window-early").is_some()), "early rows were written");
}

#[test]
fn tumbling_windows_by_their_own_setting() {
    let generator =
        GeneratorConfig { events: 3_000, jitter_ms: 5_000, late_percent: 1.0, seed: 29, ..Default::default() };
    check(generator, &[("WINDOW", "tumble"), ("WINDOW_SIZE", "30s"), ("GROUP_BY", "site_id")], 2, 1);
}

/// Seed-shaped events whose numeric fields are sometimes absent, null, negative, fractional (quarters,
/// so float sums are exact in any order) or at the 64-bit limits, and whose store is an integer.
fn with_varied_values(generator: GeneratorConfig) -> Vec<Vec<u8>> {
    Generator::new(generator)
        .enumerate()
        .map(|(index, line)| {
            let Ok(serde_json::Value::Object(mut event)) = serde_json::from_slice::<serde_json::Value>(&line) else {
                return line;
            };
            if !event.contains_key("user_id") {
                return line;
            }
            let seconds: serde_json::Value = match index % 7 {
                0 => serde_json::Value::Null,
                1 => serde_json::json!(-(index as i64)),
                2 => serde_json::json!(index as f64 / 4.0 - 300.0),
                3 => serde_json::json!(i64::MAX - index as i64),
                4 => {
                    event.remove("on_site_seconds");
                    serde_json::Value::Null
                }
                _ => event["on_site_seconds"].clone(),
            };
            if index % 7 != 4 {
                event.insert("on_site_seconds".into(), seconds);
            }
            event.insert("store_id".into(), serde_json::json!(index % 5));
            serde_json::Value::Object(event).to_string().into_bytes()
        })
        .collect()
}

#[test]
fn every_aggregate_with_nulls_fractions_and_huge_values() {
    let generator = GeneratorConfig { events: 3_000, users: 20, jitter_ms: 2_000, seed: 13, ..Default::default() };
    for aggregates in [
        "n=count,secs=sum(on_site_seconds),avg_secs=avg(on_site_seconds),seen=count(on_site_seconds)",
        "lo=min(on_site_seconds),hi=max(on_site_seconds),views=sum(viewed_percent),n=count",
        "avg_viewed=avg(viewed_percent),top=max(viewed_percent),low=min(viewed_percent),total=sum(on_site_seconds),c=count(viewed_percent)",
    ] {
        let collected = check_values(with_varied_values(generator.clone()), &[("AGGREGATES", aggregates)], 2, 1);
        let values: Vec<String> = collected.rows().map(|row| row.value_text()).collect();
        assert!(values.iter().any(|value| value.contains(":null")), "{aggregates}: some window saw only nulls");
        assert!(values.iter().any(|value| value.contains(".25") || value.contains(".75")), "{aggregates}: fractions");
    }
}

#[test]
fn integer_group_values_and_epoch_milliseconds() {
    let generator = GeneratorConfig { events: 2_000, users: 10, seed: 17, ..Default::default() };
    let values: Vec<Vec<u8>> = with_varied_values(generator)
        .into_iter()
        .map(|line| {
            let Ok(serde_json::Value::Object(mut event)) = serde_json::from_slice::<serde_json::Value>(&line) else {
                return line;
            };
            if let Some(ms) = event["timestamp"].as_str().and_then(clickstream_aggregation::time::parse_timestamp_ms) {
                event.insert("timestamp".into(), serde_json::json!(ms));
            }
            serde_json::Value::Object(event).to_string().into_bytes()
        })
        .collect();
    let env = [
        ("GROUP_BY", "store_id"),
        ("AGGREGATES", "orders=count,secs=sum(on_site_seconds)"),
        ("TIMESTAMP_FORMAT", "epoch_ms"),
    ];
    let collected = check_values(values, &env, 1, 1);
    assert!(collected.rows().any(|row| row.value_text().contains("\"store_id\":3,")));
    assert_eq!(collected.dead_letters().count(), 0, "the closing heartbeats use the events' epoch form");
}

/// Regression (closing_heartbeat_in_sql_form_under_iso): the harness wrote its closing heartbeats as
/// `YYYY-MM-DD HH:MM:SS`, which a transform pinned to `TIMESTAMP_FORMAT=iso` dead-letters.
#[test]
fn closing_heartbeats_use_the_pinned_iso_form() {
    let generator = GeneratorConfig { events: 500, users: 5, seed: 19, ..Default::default() };
    let values: Vec<Vec<u8>> = Generator::new(generator)
        .map(|line| {
            let text = String::from_utf8(line).unwrap();
            let time =
                serde_json::from_str::<serde_json::Value>(&text).unwrap()["timestamp"].as_str().unwrap().to_string();
            text.replace(&time, &format!("{}Z", time.replacen(' ', "T", 1))).into_bytes()
        })
        .collect();
    let pipeline = harness::clickstream::pipeline_config(clickstream_aggregation::time::TimestampFormat::Iso);
    let (collected, result) = replay(values, &[("TIMESTAMP_FORMAT", "iso")], pipeline, Limits::default(), true);
    result.unwrap_or_else(|failure| panic!("{failure}"));
    assert!(collected.rows().count() > 0);
    let reasons: Vec<String> = collected.dead_letters().filter_map(|d| d.header("dead-letter-reason")).collect();
    assert!(reasons.is_empty(), "{reasons:?}");
}

/// Window Top-N through the module: per event type, on several partitions and shards, with disorder and late
/// events; wasm, native and reference agree row for row (ties in group order).
#[test]
fn top_n_per_event_type_across_partitions_and_shards() {
    let generator = GeneratorConfig {
        events: 6_000,
        users: 40,
        jitter_ms: 3_000,
        late_percent: 1.0,
        seed: 21,
        ..Default::default()
    };
    let env = [("TOP_N", "3"), ("TOP_N_PARTITION_BY", "event"), ("TOP_N_RANK_FIELD", "rank")];
    let collected = check(generator, &env, 4, 2);
    let ranks: std::collections::BTreeSet<String> = collected
        .rows()
        .map(|row| serde_json::from_str::<serde_json::Value>(&row.value_text()).unwrap()["rank"].to_string())
        .collect();
    assert_eq!(ranks.into_iter().collect::<Vec<_>>(), ["1", "2", "3"]);
}

/// Ranked ascending by a float aggregate that is sometimes null (nulls rank as the smallest).
#[test]
fn top_n_ascending_by_a_float_aggregate_with_nulls() {
    let generator = GeneratorConfig { events: 3_000, users: 20, jitter_ms: 2_000, seed: 23, ..Default::default() };
    let env = [
        ("AGGREGATES", "n=count,avg_secs=avg(on_site_seconds)"),
        ("TOP_N", "2"),
        ("TOP_N_BY", "avg_secs"),
        ("TOP_N_ORDER", "asc"),
    ];
    let collected = check_values(with_varied_values(generator), &env, 2, 1);
    assert!(collected.rows().any(|row| row.value_text().contains("\"avg_secs\":null")), "a null ranked first");
}

/// COUNT(DISTINCT user_id) per page over hop windows (unique visitors), on several partitions and shards,
/// with disorder and late events; and of a numeric field that is sometimes null, fractional or huge.
#[test]
fn count_distinct_of_users_and_of_numbers() {
    let generator = GeneratorConfig {
        events: 5_000,
        users: 60,
        jitter_ms: 3_000,
        late_percent: 1.0,
        seed: 25,
        ..Default::default()
    };
    let env = [("GROUP_BY", "url"), ("AGGREGATES", "views=count,visitors=count_distinct(user_id)")];
    let collected = check(generator.clone(), &env, 3, 2);
    // Some page had a visitor come back within a window.
    assert!(collected.rows().any(|row| {
        let value: serde_json::Value = serde_json::from_str(&row.value_text()).unwrap();
        value["visitors"].as_u64() < value["views"].as_u64()
    }));
    // Nearly every number is new (each costs its text, stored once, and an entry): a larger budget.
    let env = [("AGGREGATES", "n=count,distinct_secs=count_distinct(on_site_seconds)"), ("STATE_BUDGET", "1536KiB")];
    let collected = check_values(with_varied_values(generator), &env, 2, 1);
    assert!(collected.dead_letters().all(|d| d.header("dead-letter-reason").as_deref() != Some("over_capacity")));
}

/// Percentiles per page and per group, on several partitions and shards: the module's sketch and the native
/// one agree exactly, and each is within 1 % of the reference's exact percentile, on the generator's times on
/// site and on skewed values (negative, fractional, near the 64-bit limits, null).
#[test]
fn percentiles_are_within_one_percent_of_the_exact_ones() {
    let generator = GeneratorConfig {
        events: 4_000,
        users: 40,
        jitter_ms: 3_000,
        late_percent: 1.0,
        seed: 27,
        ..Default::default()
    };
    let aggregates = "views=count,p95=percentile(on_site_seconds, 0.95),mid=median(on_site_seconds),p99=percentile(viewed_percent, 0.99)";
    let collected = check(generator.clone(), &[("GROUP_BY", "url"), ("AGGREGATES", aggregates)], 3, 2);
    assert!(collected.rows().any(|row| row.value_text().contains("\"p95\":")));
    let aggregates =
        "n=count,p50=median(on_site_seconds),p90=percentile(on_site_seconds, 0.9),top=percentile(on_site_seconds, 1)";
    check_values(with_varied_values(generator), &[("AGGREGATES", aggregates), ("STATE_BUDGET", "1536KiB")], 2, 1);
}

/// approx_count_distinct against count_distinct on windows of thousands of users per event type (the
/// HyperLogLog's dense form), through the module on 2 partitions: within 3 standard errors (2.3 % each) in
/// all but a few rows, and every row within the reference model's 6.
#[test]
fn approx_count_distinct_tracks_the_exact_count() {
    let generator =
        GeneratorConfig { events: 30_000, users: 5_000, rate_per_sec: 40.0, seed: 29, ..Default::default() };
    let env = [
        ("GROUP_BY", "event"),
        ("AGGREGATES", "approx=approx_count_distinct(user_id),exact=count_distinct(user_id)"),
        ("STATE_BUDGET", "1536KiB"),
    ];
    let collected = check(generator, &env, 2, 1);
    let pairs: Vec<(f64, f64)> = collected
        .rows()
        .map(|row| {
            let value: serde_json::Value = serde_json::from_str(&row.value_text()).unwrap();
            (value["approx"].as_f64().unwrap(), value["exact"].as_f64().unwrap())
        })
        .filter(|(_, exact)| *exact > 256.0)
        .collect();
    assert!(pairs.len() > 100, "{} rows beyond the exact sets", pairs.len());
    let within = pairs.iter().filter(|(approx, exact)| (approx - exact).abs() <= 3.0 * 0.023 * exact).count();
    println!("{within} of {} rows within 3 standard errors", pairs.len());
    assert!(within * 100 >= pairs.len() * 98, "{within} of {} rows within 3 standard errors", pairs.len());
}
