//! The native aggregator against the brute-force reference, on random streams.

use clickstream_aggregation::aggregator::{Aggregator, Output};
use clickstream_aggregation::config::Config;
use clickstream_aggregation::dead_letter::Reason;
use integration_tests::reference::{row_from_json, RefRow, Reference, ReferenceConfig};
use integration_tests::streams::{streams, Disorder, Stream};
use proptest::prelude::*;

/// Collects what the aggregator writes, in the model's terms.
struct Collect {
    config: ReferenceConfig,
    rows: Vec<RefRow>,
    dead_letters: Vec<&'static str>,
}

impl Output for Collect {
    fn row(&mut self, _key: &[u8], value: &[u8], incomplete: bool, early: bool) {
        self.rows.push(row_from_json(value, &self.config, incomplete, early));
    }
    fn dead_letter(&mut self, _topic: &str, reason: Reason, _detail: &str, _keep_value: bool) {
        self.dead_letters.push(reason.name());
    }
    fn log(&mut self, _line: &str) {}
}

fn aggregator_for(stream: &Stream) -> Aggregator {
    let mut vars = stream.vars.clone();
    vars.push(("STATE_BUDGET".into(), "4095MiB".into()));
    vars.push(("REDPANDA_OUTPUT_TOPIC_0".into(), "out".into()));
    vars.push(("REDPANDA_OUTPUT_TOPIC_1".into(), "dlq".into()));
    let config = Config::from_env(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())).unwrap();
    Aggregator::new(config)
}

fn check(stream: &Stream) -> Result<(), TestCaseError> {
    let mut aggregator = aggregator_for(stream);
    let mut reference = Reference::new(stream.reference_config());
    let mut out = Collect { config: stream.reference_config(), rows: Vec::new(), dead_letters: Vec::new() };
    for (index, (value, record_ms)) in stream.records.iter().enumerate() {
        let expected = reference.on_record(value.as_deref(), *record_ms);
        let outcome = aggregator.on_record(value.as_deref(), *record_ms, &mut out);
        prop_assert_eq!(
            outcome_name(outcome),
            expected.as_str(),
            "record {}: {:?}",
            index,
            value.as_deref().map(String::from_utf8_lossy)
        );
        if let Some(at) = out.rows.iter().zip(&reference.rows).position(|(ours, theirs)| ours != theirs) {
            prop_assert_eq!(&out.rows[at], &reference.rows[at], "row {} differs after record {}", at, index);
        }
        prop_assert_eq!(out.rows.len(), reference.rows.len(), "row count differs after record {}", index);
    }
    let dead_letters = out.dead_letters.len() as u64;
    let totals = aggregator.totals();
    prop_assert_eq!(totals.counted + totals.heartbeats + dead_letters, stream.records.len() as u64);
    prop_assert_eq!(
        (totals.partly_late, totals.missed_windows),
        (reference.totals.partly_late, reference.totals.missed_windows),
        "partly late events and the windows they missed"
    );
    Ok(())
}

/// With tiny shares per record, fired rows wait for later records while more events arrive: the rows
/// still come in the reference's order, each a prefix of what it has written, and records with no value
/// (dead letters) after the stream write the rest. Early rows that wait are made when written, so they
/// can hold events the reference's did not yet: there the final rows are compared, and each early row
/// must come before its window's final row.
fn check_with_backlog(stream: &Stream, work: usize, row_bytes: usize) -> Result<(), TestCaseError> {
    let early = stream.vars.iter().any(|(name, _)| name == "EMIT_EARLY");
    fn finals(rows: &[RefRow], early: bool) -> Vec<&RefRow> {
        rows.iter().filter(|row| !(early && row.early)).collect()
    }
    let mut aggregator = aggregator_for(stream).with_share_per_record(work, row_bytes);
    let mut reference = Reference::new(stream.reference_config());
    let mut out = Collect { config: stream.reference_config(), rows: Vec::new(), dead_letters: Vec::new() };
    let mut records = stream.records.clone();
    let mut index = 0;
    loop {
        if index == records.len() {
            if !aggregator.engine().has_backlog() {
                break;
            }
            records.push((None, records[index - 1].1));
        }
        let (value, record_ms) = &records[index];
        let expected = reference.on_record(value.as_deref(), *record_ms);
        let outcome = aggregator.on_record(value.as_deref(), *record_ms, &mut out);
        prop_assert_eq!(outcome_name(outcome), expected.as_str(), "record {}", index);
        if early {
            let written = out.rows.iter().filter(|row| !row.early);
            let mut expected = reference.rows.iter().filter(|row| !row.early);
            for (at, row) in written.enumerate() {
                prop_assert_eq!(Some(row), expected.next(), "final row {} after record {}", at, index);
            }
        } else {
            prop_assert!(out.rows.len() <= reference.rows.len(), "more rows than the reference after record {}", index);
            prop_assert_eq!(&out.rows[..], &reference.rows[..out.rows.len()], "after record {}", index);
        }
        index += 1;
        prop_assert!(index < stream.records.len() + 100_000, "the backlog never drains");
    }
    prop_assert_eq!(finals(&out.rows, early), finals(&reference.rows, early));
    let window_and_group = |row: &RefRow| (row.window_start.clone(), row.window_end.clone(), row.group.clone());
    let mut closed = std::collections::BTreeSet::new();
    for row in &out.rows {
        prop_assert!(!closed.contains(&window_and_group(row)), "a row after its window's final row: {:?}", row);
        if !row.early {
            closed.insert(window_and_group(row));
        }
    }
    Ok(())
}

fn outcome_name(outcome: clickstream_aggregation::aggregator::Outcome) -> &'static str {
    match outcome {
        clickstream_aggregation::aggregator::Outcome::Counted => "counted",
        clickstream_aggregation::aggregator::Outcome::Heartbeat => "heartbeat",
        clickstream_aggregation::aggregator::Outcome::DeadLetter(reason) => reason.name(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn rows_that_wait_for_later_records_match_the_reference(
        stream in streams(5, Disorder::Jitter(400_000), 10, 300),
        work in 1usize..40,
        row_bytes in 1usize..2_000,
    ) {
        check_with_backlog(&stream, work, row_bytes)?;
    }

    #[test]
    fn in_order_streams_match_the_reference(stream in streams(5, Disorder::InOrder, 0, 300)) {
        check(&stream)?;
    }

    #[test]
    fn out_of_order_and_late_streams_match_the_reference(stream in streams(5, Disorder::Jitter(400_000), 0, 300)) {
        check(&stream)?;
    }

    #[test]
    fn streams_with_malformed_records_match_the_reference(stream in streams(5, Disorder::Jitter(30_000), 25, 300)) {
        check(&stream)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn many_keys_match_the_reference(stream in streams(2_000, Disorder::Jitter(20_000), 5, 1_500)) {
        check(&stream)?;
    }
}
