//! Hostile input through the real module at the broker's limits: never a trap, every record accounted
//! for. The named cases are the regression corpus; a bug found gets a case or test named after it.

use std::collections::BTreeMap;

use integration_tests::replay::{clickstream_config, meta, module, replay, Collected};
use proptest::prelude::*;
use transform_host::{Limits, Vm};

const EVENT: &str =
    r#"{"timestamp":"2020-11-16 19:00:03","event":"view_item","user_id":"u1","site_id":"s","url":"/item/1"}"#;

fn event_at(time: &str) -> Vec<u8> {
    EVENT.replace("2020-11-16 19:00:03", time).into_bytes()
}

/// The nasty inputs, each with the reason it must be dead-lettered for (or "counted"/"heartbeat").
fn corpus() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let deep_array = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    vec![
        ("empty", b"".to_vec(), "not_json"),
        ("whitespace", b"  \n\t ".to_vec(), "not_json"),
        ("nul_bytes", b"\0\0\0".to_vec(), "not_json"),
        ("byte_order_mark", [b"\xef\xbb\xbf", EVENT.as_bytes()].concat(), "not_json"),
        ("lone_continuation_byte", b"\x80".to_vec(), "invalid_utf8"),
        ("overlong_encoding", b"{\"a\":\"\xc0\xaf\"}".to_vec(), "invalid_utf8"),
        ("encoded_surrogate", b"{\"a\":\"\xed\xa0\x80\"}".to_vec(), "invalid_utf8"),
        ("escaped_lone_surrogate", br#"{"timestamp":"\ud800"}"#.to_vec(), "not_json"),
        ("nan", br#"{"timestamp":NaN}"#.to_vec(), "not_json"),
        ("infinity", br#"{"timestamp":-Infinity}"#.to_vec(), "not_json"),
        (
            "huge_exponent",
            br#"{"timestamp":"2020-11-16 19:00:03","event":"e","user_id":"u","url":"/","n":1e999999}"#.to_vec(),
            "counted",
        ),
        (
            "negative_zero",
            br#"{"timestamp":"2020-11-16 19:00:03","event":"e","user_id":"u","url":"/","n":-0}"#.to_vec(),
            "counted",
        ),
        ("deep_array_100000", deep_array.into_bytes(), "too_deep"),
        ("deep_object_65", format!("{}1{}", "{\"a\":".repeat(65), "}".repeat(65)).into_bytes(), "too_deep"),
        ("open_brackets_only", "[".repeat(200_000).into_bytes(), "too_deep"),
        ("unterminated_string", br#"{"timestamp":"2020"#.to_vec(), "not_json"),
        ("trailing_garbage", [EVENT.as_bytes(), b"}"].concat(), "not_json"),
        ("two_objects", [EVENT.as_bytes(), EVENT.as_bytes()].concat(), "not_json"),
        ("top_level_string", br#""2020-11-16 19:00:03""#.to_vec(), "not_object"),
        ("empty_object", b"{}".to_vec(), "missing_field"),
        (
            "timestamp_epoch_milliseconds",
            br#"{"timestamp":1605553203000,"event":"e","user_id":"u","url":"/"}"#.to_vec(),
            "counted",
        ),
        (
            "timestamp_fraction_of_milliseconds",
            br#"{"timestamp":1605553203000.5,"event":"e","user_id":"u","url":"/"}"#.to_vec(),
            "bad_timestamp",
        ),
        ("timestamp_object", br#"{"timestamp":{"$date":"x"}}"#.to_vec(), "wrong_type"),
        (
            "escaped_name",
            br#"{"timestamp":"2020-11-16 19:00:03","event":"e","user_i\u0064":"u","url":"/"}"#.to_vec(),
            "counted",
        ),
        (
            "escaped_name_cut_short",
            br#"{"timestamp":"2020-11-16 19:00:03","event":"e","user_i\u0064_and_more":"u","url":"/"}"#.to_vec(),
            "missing_field",
        ),
        (
            "group_field_bool",
            br#"{"timestamp":"2020-11-16 19:00:03","event":true,"user_id":"u","url":"/"}"#.to_vec(),
            "wrong_type",
        ),
        (
            "huge_timestamp_string",
            format!(r#"{{"timestamp":"{}"}}"#, "9".repeat(300_000)).into_bytes(),
            "bad_timestamp",
        ),
        (
            "huge_group_value_is_not_copied_into_memory",
            EVENT.replace("u1", &"u".repeat(200_000)).into_bytes(),
            "field_too_long",
        ),
        (
            "huge_unrelated_field",
            EVENT.replace("\"s\"", &format!("\"{}\"", "s".repeat(200_000))).into_bytes(),
            "counted",
        ),
        ("year_0000_windows_before_year_0000", event_at("0000-01-01 00:00:00"), "out_of_range"),
        ("year_9999_far_future", event_at("9999-12-31 23:59:59.999"), "future"),
        ("year_10000", event_at("10000-01-01 00:00:00"), "bad_timestamp"),
        ("negative_year", event_at("-001-01-01 00:00:00"), "bad_timestamp"),
        ("leap_second", event_at("2016-12-31 23:59:60"), "bad_timestamp"),
        ("february_30", event_at("2020-02-30 00:00:00"), "bad_timestamp"),
        ("time_zone_offset_two_hours_behind", event_at("2020-11-16T19:00:03+02:00"), "late"),
        ("time_zone_offset_on_the_space_form", event_at("2020-11-16 19:00:03+02:00"), "bad_timestamp"),
        ("group_value_float", EVENT.replace("\"u1\"", "1.5").into_bytes(), "wrong_type"),
        ("group_value_integer", EVENT.replace("\"u1\"", "-17").into_bytes(), "counted"),
        (
            "group_value_integer_beyond_64_bits",
            EVENT.replace("\"u1\"", "99999999999999999999").into_bytes(),
            "out_of_range",
        ),
        ("ten_fraction_digits", event_at("2020-11-16 19:00:03.1234567890"), "bad_timestamp"),
        ("iso_form", event_at("2020-11-16T19:00:04.5Z"), "counted"),
        ("control_and_quotes_in_group_value", EVENT.replace("u1", r#"u\n\"\u0000\\"#).into_bytes(), "counted"),
        ("duplicate_keys_last_wins", EVENT.replace("{", r#"{"user_id":7,"#).into_bytes(), "counted"),
        ("heartbeat", br#"{"timestamp":"2020-11-16 19:00:05"}"#.to_vec(), "heartbeat"),
    ]
}

/// What the module's last summary says (one shard), and checks the books: every record it was given
/// was counted, a heartbeat or a dead letter, and every dead letter was written.
fn check_books(collected: &Collected) -> BTreeMap<String, i64> {
    let last = collected.last_summaries().remove(&0).expect("the VM logged a summary");
    let delivered = collected.delivered.iter().map(Vec::len).sum::<usize>() as i64;
    assert_eq!(last["records"], delivered);
    assert_eq!(last["counted"] + last["heartbeats"] + last["dead_letters"], delivered);
    assert_eq!(last["dead_letters"], collected.dead_letters().count() as i64);
    last
}

#[test]
fn the_corpus_of_nasty_inputs_never_traps_and_each_gets_its_outcome() {
    let mut values = vec![event_at("2020-11-16 19:00:03")];
    let corpus = corpus();
    values.extend(corpus.iter().map(|(_, value, _)| value.clone()));
    let (collected, result) = replay(values, &[], clickstream_config(), Limits::default(), true);
    result.unwrap_or_else(|failure| panic!("trapped: {failure}"));
    check_books(&collected);
    let mut dead = collected.dead_letters();
    for (name, value, expected) in &corpus {
        if matches!(*expected, "counted" | "heartbeat") {
            continue;
        }
        let letter = dead.next().unwrap_or_else(|| panic!("{name}: no dead letter"));
        assert_eq!(letter.header("dead-letter-reason").as_deref(), Some(*expected), "{name}");
        if value.len() <= 64 << 10 {
            assert_eq!(letter.payload.value.as_deref(), Some(&value[..]), "{name}: dead-lettered unchanged");
        }
    }
    assert!(collected.rows().any(|row| row.value_text().contains(r#""user_id":"u\n\"\u0000\\""#)), "escaped in output");
}

#[test]
fn a_far_future_event_does_not_close_everyone_s_windows() {
    let stream = |bogus: bool| {
        let mut values: Vec<Vec<u8>> =
            (0..40).map(|i| event_at(&format!("2020-11-16 19:0{}:{:02}", i / 10, i % 10 * 6))).collect();
        if bogus {
            values.insert(20, event_at("9999-12-31 23:59:59"));
        }
        values
    };
    let run = |guarded: bool| {
        let (collected, result) = replay(stream(guarded), &[], clickstream_config(), Limits::default(), false);
        result.unwrap_or_else(|failure| panic!("trapped: {failure}"));
        collected
    };
    let (honest, guarded) = (run(false), run(true));
    assert!(honest.rows().count() > 0, "the honest stream writes rows to compare");
    let rows = |c: &Collected| c.rows().map(|r| r.value_text()).collect::<Vec<_>>();
    assert_eq!(rows(&guarded), rows(&honest));
    let reasons: Vec<String> = guarded.dead_letters().filter_map(|d| d.header("dead-letter-reason")).collect();
    assert_eq!(reasons, ["future"]);
}

/// Regression: the harness once closed windows from the far-future event's time, a year-10000 heartbeat
/// that the module refused as a bad timestamp, so no window closed.
#[test]
fn close_windows_ignores_an_unbelievable_far_future_event() {
    let values = vec![event_at("2020-11-16 19:00:03"), event_at("9999-12-31 23:59:59")];
    let (collected, result) = replay(values, &[], clickstream_config(), Limits::default(), true);
    result.unwrap();
    assert_eq!(collected.rows().count(), 30, "the one real event's windows all closed");
    let reasons: Vec<String> = collected.dead_letters().filter_map(|d| d.header("dead-letter-reason")).collect();
    assert_eq!(reasons, ["future"]);
}

#[test]
fn heartbeats_close_the_windows_of_a_quiet_partition_and_are_counted_nowhere() {
    let mut values = vec![event_at("2020-11-16 19:00:03"), event_at("2020-11-16 19:00:04")];
    let (quiet, result) = replay(values.clone(), &[], clickstream_config(), Limits::default(), false);
    result.unwrap_or_else(|failure| panic!("trapped: {failure}"));
    assert_eq!(quiet.rows().count(), 0, "without a later record no window closes");
    values.extend((1..=40).map(|i| format!(r#"{{"timestamp":"2020-11-16 19:{:02}:03"}}"#, i / 4).into_bytes()));
    let (beating, result) = replay(values, &[], clickstream_config(), Limits::default(), true);
    result.unwrap();
    assert_eq!(beating.rows().count(), 30, "heartbeats closed all 30 windows of the two events");
    assert!(beating.rows().all(|row| row.value_text().contains("\"event_count\":2")));
    assert_eq!(beating.dead_letters().count(), 0);
    assert_eq!(check_books(&beating)["heartbeats"], 40 + 2, "the 40, then the closing and summary heartbeats");
}

#[test]
fn every_bad_setting_stops_the_module_at_start_with_one_clear_line() {
    let cases: &[(&str, &str)] = &[
        ("WINDOW_SIZE", "5 minutes"),
        ("WINDOW_SIZE", "0s"),
        ("WINDOW_SIZE", "99999999999999999999d"),
        ("WINDOW_SLIDE", "7s"),
        ("WINDOW_SLIDE", "10"),
        ("WATERMARK_DELAY", "1 ms"),
        ("GROUP_BY", "user_id,window_end"),
        ("AGGREGATES", "n=mode(x)"),
        ("AGGREGATES", "p=percentile(x, 2)"),
        ("TOP_N", "0"),
        ("AGGREGATES", "n=sum(x"),
        ("TIMESTAMP_FORMAT", "unix"),
        ("RESTART_MARGIN", "soon"),
        ("STATE_BUDGET", "4096MiB"),
        ("GROUP_BY", ","),
        ("TIMESTAMP_FIELD", "a,b"),
        ("STATE_BUDGET", "10GiB"),
        ("MAX_EVENT_AHEAD", "1y"),
        ("INCOMPLETE_WINDOWS", "ignore"),
        ("DEAD_LETTER_TOPIC", "elsewhere"),
        ("DEAD_LETTER_MAX_BYTES", "-1"),
    ];
    let module = module(Limits::default());
    for (variable, value) in cases {
        let failure = Vm::start(&module, &meta(&[(variable, value)]))
            .err()
            .unwrap_or_else(|| panic!("{variable}={value} started"));
        assert!(failure.reason.contains("exited with status 1 (proc_exit)"), "{variable}: {failure}");
        let lines: Vec<&str> = failure.logs.iter().map(|line| line.text.trim_end()).collect();
        assert_eq!(lines.len(), 1, "{variable}: {lines:?}");
        let expected_variable = if *variable == "WINDOW_SLIDE" && *value == "7s" { "WINDOW_SIZE" } else { variable };
        assert!(
            lines[0].starts_with(&format!(
                "clickstream-aggregation cannot start: invalid configuration: {expected_variable}="
            )),
            "{variable}: {}",
            lines[0]
        );
    }
}

/// Records made of random bytes, or of JSON-like text with the right field names in random shapes.
fn hostile_value() -> impl Strategy<Value = Vec<u8>> {
    let scalar = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
        (0i64..400, 0u32..60, 0u32..60)
            .prop_map(|(day, m, s)| format!("\"2020-11-{:02} 19:{m:02}:{s:02}\"", day % 28 + 1)),
    ];
    let value = scalar.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec(
                (prop_oneof![Just("timestamp"), Just("user_id"), Just("event"), Just("url"), Just("x")], inner),
                0..6
            )
            .prop_map(|members| format!(
                "{{{}}}",
                members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(",")
            )),
        ]
    });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        value.prop_map(String::into_bytes),
        any::<prop::sample::Index>().prop_map(|cut| EVENT.as_bytes()[..cut.index(EVENT.len() + 1)].to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn random_records_never_trap_and_the_books_balance(values in prop::collection::vec(hostile_value(), 1..120)) {
        let (collected, result) = replay(values, &[], clickstream_config(), Limits::default(), true);
        prop_assert!(result.is_ok(), "trapped: {}", result.err().unwrap());
        check_books(&collected);
    }
}

/// Regression (readme_said_negative_timestamps_panic): a record with a negative Kafka timestamp reaches
/// the transform with that timestamp; its 2020 event is then far ahead of it, so `future`, and with
/// `TIMESTAMP_FIELD=@record` it is counted at that time.
#[test]
fn a_negative_record_timestamp_reaches_the_transform_as_it_is() {
    use transform_host::pipeline::{Pipeline, ProducerRecord};
    for (env, expected) in [(&[][..], "future"), (&[("TIMESTAMP_FIELD", "@record")][..], "counted")] {
        let mut collected = Collected::default();
        let result = (|| {
            let mut pipeline =
                Pipeline::new(module(Limits::default()), meta(env), clickstream_config(), &mut collected);
            pipeline.push(ProducerRecord {
                value: Some(EVENT.as_bytes().to_vec()),
                timestamp_ms: Some(-5),
                ..Default::default()
            })?;
            pipeline.finish()
        })();
        result.unwrap_or_else(|failure| panic!("trapped: {failure}"));
        let reasons: Vec<String> = collected.dead_letters().filter_map(|d| d.header("dead-letter-reason")).collect();
        if expected == "future" {
            assert_eq!(reasons, ["future"]);
            let detail = collected.dead_letters().next().unwrap().header("dead-letter-detail").unwrap();
            assert!(detail.contains("after the record timestamp -5"), "{detail}");
        } else {
            assert!(reasons.is_empty(), "{reasons:?}");
        }
    }
}
