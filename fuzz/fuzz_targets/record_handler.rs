//! Fuzzes the record handler: the input is split into records (at 0xff bytes), each with a record
//! timestamp taken from its first bytes, and fed to one aggregator under a small budget and short
//! windows so state fills, windows fire and events go late. Nothing may panic, and every record must
//! get exactly one outcome, with the dead letters written matching the totals.
#![no_main]

use clickstream_aggregation::aggregator::{Aggregator, Outcome, Output};
use clickstream_aggregation::config::Config;
use clickstream_aggregation::dead_letter::Reason;
use libfuzzer_sys::fuzz_target;

struct Counting {
    /// Dead letters written, by reason.
    dead_letters: Vec<u64>,
    /// Row bytes written for the current record, and the largest row.
    row_bytes: usize,
    largest_row: usize,
}

impl Output for Counting {
    fn row(&mut self, key: &[u8], value: &[u8], _incomplete: bool, _early: bool) {
        assert!(key.starts_with(b"[\"") && value.starts_with(b"{\"window_start\":\""));
        self.row_bytes += key.len() + value.len();
        self.largest_row = self.largest_row.max(key.len() + value.len());
    }
    fn dead_letter(&mut self, _topic: &str, reason: Reason, _detail: &str, _keep_value: bool) {
        self.dead_letters[reason as usize] += 1;
    }
    fn log(&mut self, line: &str) {
        assert!(!line.contains('\n'));
    }
}

fuzz_target!(|data: &[u8]| {
    let vars = [
        ("WINDOW_SIZE", "30s"),
        ("WINDOW_SLIDE", "10s"),
        ("STATE_BUDGET", "16KiB"),
        ("GROUP_BY", "user_id,url"),
        ("AGGREGATES", "n=count,s=sum(n),lo=min(n),hi=max(n),a=avg(n),c=count(user_id)"),
        ("DEAD_LETTER_MAX_BYTES", "64"),
        ("REDPANDA_OUTPUT_TOPIC_0", "out"),
        ("REDPANDA_OUTPUT_TOPIC_1", "dlq"),
    ];
    let config = Config::from_env(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())).unwrap();
    let share = config.row_bytes_per_record;
    let mut aggregator = Aggregator::new(config);
    let mut out = Counting { dead_letters: vec![0; Reason::ALL.len()], row_bytes: 0, largest_row: 0 };
    let (mut counted, mut heartbeats, mut dead_letters) = (0, 0, vec![0; Reason::ALL.len()]);
    for record in data.split(|&b| b == 0xff) {
        let record_ms = 1_600_000_000_000 + i64::from(record.first().copied().unwrap_or(0)) * 3_600_000;
        let value = (!record.is_empty()).then_some(record);
        out.row_bytes = 0;
        match aggregator.on_record(value, record_ms, &mut out) {
            Outcome::Counted => counted += 1,
            Outcome::Heartbeat => heartbeats += 1,
            Outcome::DeadLetter(reason) => dead_letters[reason as usize] += 1,
        }
        assert!(out.row_bytes < share + out.largest_row, "{} bytes of rows", out.row_bytes);
    }
    let totals = aggregator.totals();
    assert_eq!((counted, heartbeats), (totals.counted, totals.heartbeats));
    assert_eq!(dead_letters, totals.dead_letters);
    assert_eq!(out.dead_letters, dead_letters, "each dead letter is written, with its reason");
    assert_eq!(counted + heartbeats + dead_letters.iter().sum::<u64>(), totals.records);
    assert!(aggregator.engine().stats().state_bytes <= 16 << 10);
});
