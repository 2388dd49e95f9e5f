//! Native throughput of the record handler (`cargo bench -p clickstream-aggregation`): events per second
//! for a few stream shapes, each on 300,000 events. Not a test: it asserts nothing and prints numbers.

use std::hint::black_box;
use std::time::Instant;

use clickstream_aggregation::aggregator::{Aggregator, Output, Reason};
use clickstream_aggregation::config::Config;
use clickstream_aggregation::time::format_timestamp_ms;

struct Discard(u64);

impl Output for Discard {
    fn row(&mut self, key: &[u8], value: &[u8], _incomplete: bool) {
        self.0 += black_box(key.len() + value.len()) as u64;
    }
    fn dead_letter(&mut self, _topic: &str, _reason: Reason, _detail: &str, _keep_value: bool) {}
    fn log(&mut self, _line: &str) {}
}

/// `events` clicks at `per_second` from `users` users, as JSON values.
fn stream(events: u64, users: u64, per_second: u64) -> Vec<Vec<u8>> {
    let start = 1_605_553_200_000i64;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..events)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut time = String::new();
            format_timestamp_ms(start + (i * 1_000 / per_second) as i64, &mut time);
            format!(
                r#"{{"timestamp":"{time}","event":"{}","user_id":"user{}","site_id":"amazing-store.com","url":"/item/{}","on_site_seconds":{},"viewed_percent":{}}}"#,
                ["view_item", "add_to_cart", "checkout"][(state % 3) as usize],
                state % users,
                state / 7 % 10,
                state % 100,
                state / 3 % 100
            )
            .into_bytes()
        })
        .collect()
}

fn run(name: &str, events: &[Vec<u8>], budget: &str) {
    let vars = [("STATE_BUDGET", budget), ("REDPANDA_OUTPUT_TOPIC_0", "out"), ("REDPANDA_OUTPUT_TOPIC_1", "dlq")];
    let config = Config::from_env(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())).unwrap();
    let mut best = f64::MAX;
    let mut rows = 0;
    for _ in 0..3 {
        let mut aggregator = Aggregator::new(config.clone());
        let mut out = Discard(0);
        let started = Instant::now();
        for value in events {
            aggregator.on_record(Some(value), 1_790_000_000_000, &mut out);
        }
        best = best.min(started.elapsed().as_secs_f64());
        rows = aggregator.totals().rows;
        black_box(out.0);
    }
    println!(
        "{name:<44} {:>10.0} events/s  {:>8} rows  ({:.3} s for {} events)",
        events.len() as f64 / best,
        rows,
        best,
        events.len()
    );
}

fn main() {
    run("50 users, 20 events/s (the demo's shape)", &stream(300_000, 50, 20), "768KiB");
    run("1,000 users, 200 events/s", &stream(300_000, 1_000, 200), "16MiB");
    run("100,000 users, 1,000 events/s (budget-bound)", &stream(300_000, 100_000, 1_000), "768KiB");
}
