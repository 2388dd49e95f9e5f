//! Random clickstreams for property tests: in order, out of order, late, malformed, heartbeats, few or
//! many keys, under several window configurations.

use proptest::prelude::*;

use crate::reference::{format_time, ReferenceConfig};

/// Every record's Kafka timestamp: the streams are replays of 2020 data produced "now".
pub const RECORD_MS: i64 = 1_790_000_000_000;
/// 2020-11-16 19:00:00 UTC.
const START_MS: i64 = 1_605_553_200_000;

/// A configuration (as environment variables) and the record values to feed.
#[derive(Debug, Clone)]
pub struct Stream {
    pub vars: Vec<(String, String)>,
    pub values: Vec<Option<Vec<u8>>>,
}

impl Stream {
    pub fn reference_config(&self) -> ReferenceConfig {
        ReferenceConfig::from_env(|name| self.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }
}

/// How far behind the running event time a record may be placed.
#[derive(Debug, Clone, Copy)]
pub enum Disorder {
    InOrder,
    /// Up to this many milliseconds behind.
    Jitter(i64),
}

fn window_vars() -> impl Strategy<Value = Vec<(String, String)>> {
    let windows = prop_oneof![
        Just(("5m", "10s")),
        Just(("1m", "1m")),
        Just(("30s", "10s")),
        Just(("20s", "5s")),
        Just(("3s", "1s")),
    ];
    let delays = prop_oneof![Just("0ms"), Just("1ms"), Just("2s")];
    let groups = prop_oneof![Just("user_id,event,url"), Just("user_id"), Just("site_id,event")];
    (windows, delays, groups).prop_map(|((size, slide), delay, group_by)| {
        [("WINDOW_SIZE", size), ("WINDOW_SLIDE", slide), ("WATERMARK_DELAY", delay), ("GROUP_BY", group_by)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

/// One step of a stream: how far event time moves, what kind of record, and its group choices.
#[derive(Debug, Clone)]
struct Step {
    advance_ms: i64,
    behind_ms: i64,
    kind: u8,
    user: u16,
    event: u8,
    url: u8,
}

fn step(users: u16, disorder: Disorder) -> impl Strategy<Value = Step> {
    let advance = prop_oneof![8 => 0i64..2_000, 1 => 0i64..120_000];
    let behind = match disorder {
        Disorder::InOrder => Just(0i64).boxed(),
        Disorder::Jitter(max) => prop_oneof![3 => Just(0i64), 1 => 0..=max].boxed(),
    };
    (advance, behind, 0u8..100, 0..users, 0u8..4, 0u8..10).prop_map(
        |(advance_ms, behind_ms, kind, user, event, url)| Step { advance_ms, behind_ms, kind, user, event, url },
    )
}

/// Streams with `malformed_percent` bad or unusual records mixed into clicks from `users` users.
pub fn streams(users: u16, disorder: Disorder, malformed_percent: u8, max_len: usize) -> impl Strategy<Value = Stream> {
    (window_vars(), prop::collection::vec(step(users, disorder), 1..max_len)).prop_map(move |(vars, steps)| {
        let mut now = START_MS;
        let values = steps
            .iter()
            .map(|step| {
                now += step.advance_ms;
                record(step, now - step.behind_ms, malformed_percent)
            })
            .collect();
        Stream { vars, values }
    })
}

const EVENTS: [&str; 4] = ["view_item", "add_to_cart", "checkout", "search"];

fn record(step: &Step, event_ms: i64, malformed_percent: u8) -> Option<Vec<u8>> {
    let time = format_time(event_ms);
    let click = |time: &str| {
        format!(
            r#"{{"timestamp":"{time}","event":"{}","user_id":"user{}","site_id":"site{}","url":"/item/{}","on_site_seconds":{},"viewed_percent":{}}}"#,
            EVENTS[step.event as usize],
            step.user,
            step.user % 3,
            step.url,
            step.user % 100,
            step.url * 10
        )
    };
    if step.kind >= malformed_percent {
        return Some(click(&time).into_bytes());
    }
    // Bad, odd or special records, each with a single fault.
    Some(match step.kind % 12 {
        0 => return None,
        1 => b"\xff\xfe not utf-8".to_vec(),
        2 => click(&time).as_bytes()[..20].to_vec(),
        3 => b"[1, 2, 3]".to_vec(),
        4 => format!(r#"{{"timestamp":"{time}","deep":{}{}}}"#, "[".repeat(80), "]".repeat(80)).into_bytes(),
        5 => click(&time).replace("\"user_id\"", "\"uid\"").into_bytes(),
        6 => click(&time).replace(&format!("\"url\":\"/item/{}\"", step.url), "\"url\":7").into_bytes(),
        7 => click(&time).replace(&time, "2020-11-16 25:00:00").into_bytes(),
        8 => click(&format_time(event_ms + 30 * 86_400_000 * 1_000)).into_bytes(),
        9 => format!(r#"{{"timestamp":"{time}"}}"#).into_bytes(),
        10 => click(&time.replace(' ', "T")).replace("\"}", "Z\"}").into_bytes(),
        _ => click(&time).replace("\"event\":\"", "\"event\":\"\\u00e9\\n\\\"").into_bytes(),
    })
}
