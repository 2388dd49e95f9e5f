//! Random event streams for property tests: in order, out of order, late, malformed, heartbeats, few or
//! many keys, under several window kinds and sizes, group-by, aggregate and event-time configurations.
//!
//! Aggregated values are small integers, integers near the 64-bit limits, and quarters (`12.75`): their
//! float sums are exact in any order, so the transform (which adds pane by pane) and the reference (which
//! adds in arrival order) must agree to the bit.

use proptest::prelude::*;

use crate::reference::{format_time, ReferenceConfig};

/// Every record's Kafka timestamp (but with `TIMESTAMP_FIELD=@record`): the streams are replays of 2020
/// data produced "now".
pub const RECORD_MS: i64 = 1_790_000_000_000;
/// 2020-11-16 19:00:03 UTC.
const START_MS: i64 = 1_605_553_203_000;

/// A configuration (as environment variables) and the records to feed: value and Kafka timestamp.
#[derive(Clone)]
pub struct Stream {
    pub vars: Vec<(String, String)>,
    pub records: Vec<(Option<Vec<u8>>, i64)>,
}

/// Values as text, one record a line, so a shrunk failing stream can be read.
impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Stream {:?}", self.vars)?;
        for (index, (value, record_ms)) in self.records.iter().enumerate() {
            let text = value.as_deref().map(String::from_utf8_lossy);
            writeln!(f, "  {index}: record_ms={record_ms} {text:?}")?;
        }
        Ok(())
    }
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

/// How events carry their time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeForm {
    /// `TIMESTAMP_FORMAT=auto`, each event in one of the forms it reads.
    Mixed,
    Sql,
    Iso,
    EpochMs,
    EpochS,
    /// `TIMESTAMP_FIELD=@record`.
    Record,
}

fn vars() -> impl Strategy<Value = (Vec<(String, String)>, TimeForm)> {
    // (WINDOW, WINDOW_SIZE, the setting and value of its slide or step, if any).
    let windows = prop_oneof![
        Just(("hop", "5m", Some(("WINDOW_SLIDE", "10s")))),
        Just(("hop", "1m", Some(("WINDOW_SLIDE", "1m")))),
        Just(("hop", "30s", Some(("WINDOW_SLIDE", "10s")))),
        Just(("hop", "3s", Some(("WINDOW_SLIDE", "1s")))),
        Just(("tumble", "20s", None)),
        Just(("cumulate", "1m", Some(("WINDOW_STEP", "10s")))),
        Just(("cumulate", "20s", Some(("WINDOW_STEP", "5s")))),
        Just(("cumulate", "3s", Some(("WINDOW_STEP", "1s")))),
        Just(("session", "5m", Some(("SESSION_GAP", "20s")))),
        Just(("session", "5m", Some(("SESSION_GAP", "2s")))),
    ];
    let delays = prop_oneof![Just("0ms"), Just("1ms"), Just("2s")];
    let groups = prop_oneof![Just("user_id,event,url"), Just("user_id"), Just("site_id,event"), Just("store,user_id")];
    let aggregates = prop_oneof![
        Just("event_count=count"),
        Just("n=count,secs=sum(on_site_seconds),avg_viewed=avg(viewed_percent)"),
        Just("lo=min(on_site_seconds),hi=max(on_site_seconds),seen=count(viewed_percent),total=sum(viewed_percent)"),
        Just("a=avg(on_site_seconds),s=sum(on_site_seconds),n=count,m=max(viewed_percent),c=count(on_site_seconds)"),
        // COUNT(f) of a field that is sometimes text ("55"), and the SQL spellings of a row count.
        Just("rows=count(*),secs=count(on_site_seconds),urls=count(url),one=COUNT(1)"),
        // COUNT(DISTINCT f) of text, of numbers (integers, quarters, the 64-bit limits), and of a field that
        // is sometimes text ("55").
        Just("users=count_distinct(user_id),n=count,secs=count_distinct(on_site_seconds),pages=approx_count_distinct(url)"),
        Just("n=count,users=approx_count_distinct(user_id),secs=approx_count_distinct(on_site_seconds)"),
        // Percentiles of values of both signs, zeros and the 64-bit limits (within 1 % of the exact value),
        // neither first nor last: Top-N ranks by those, and a sketch's ties are not the exact values' order.
        Just("n=count,p95=percentile(on_site_seconds, 0.95),mid=median(viewed_percent),p0=percentile(on_site_seconds, 0),lo=min(on_site_seconds)"),
    ];
    let forms = prop_oneof![
        3 => Just(TimeForm::Mixed),
        1 => Just(TimeForm::Sql),
        1 => Just(TimeForm::Iso),
        1 => Just(TimeForm::EpochMs),
        1 => Just(TimeForm::EpochS),
        1 => Just(TimeForm::Record),
    ];
    // Window Top-N in a quarter of the configurations: N, ranked by the first or the last aggregate (a
    // float or null one in some), either order, partitioned by the first group field or not, ranks or not.
    let top_n = (0u8..4, 1u8..4, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>());
    // Early rows in a third of the other configurations, every second or every 10 s of watermark time (when
    // shorter than the window, as the module requires).
    let early = prop_oneof![4 => Just(None), 1 => Just(Some("1s")), 1 => Just(Some("10s"))];
    (windows, delays, groups, aggregates, forms, top_n, early).prop_map(
        |((window, size, pane), delay, group_by, aggregates, form, top_n, early)| {
            let mut vars = vec![
                ("WINDOW", window.to_string()),
                ("WINDOW_SIZE", size.to_string()),
                ("WATERMARK_DELAY", delay.to_string()),
                ("GROUP_BY", group_by.to_string()),
                ("AGGREGATES", aggregates.to_string()),
            ];
            vars.extend(pane.map(|(setting, value)| (setting, value.to_string())));
            // Window Top-N ranks one window's rows: not for sessions, one window per group.
            let top_n = if window == "session" { (1, 0, false, false, false, false) } else { top_n };
            let ms = |text| clickstream_aggregation::duration::parse_duration_ms(text).expect("a duration");
            let early = early.filter(|every| ms(every) < ms(size));
            if let (Some(every), false, 1..) = (early, window == "session", top_n.0) {
                vars.push(("EMIT_EARLY", every.to_string()));
            }
            if let (0, n, by_last, ascending, partitioned, ranked) = top_n {
                vars.push(("TOP_N", n.to_string()));
                if by_last {
                    let last = aggregates.rsplit(',').next().and_then(|item| item.split_once('=')).unwrap().0;
                    vars.push(("TOP_N_BY", last.to_string()));
                }
                if ascending {
                    vars.push(("TOP_N_ORDER", "asc".to_string()));
                }
                if partitioned {
                    vars.push(("TOP_N_PARTITION_BY", group_by.split(',').next().unwrap().to_string()));
                }
                if ranked {
                    vars.push(("TOP_N_RANK_FIELD", "rank".to_string()));
                }
            }
            match form {
                TimeForm::Mixed => {}
                TimeForm::Sql => vars.push(("TIMESTAMP_FORMAT", "sql".into())),
                TimeForm::Iso => vars.push(("TIMESTAMP_FORMAT", "iso".into())),
                TimeForm::EpochMs => vars.push(("TIMESTAMP_FORMAT", "epoch_ms".into())),
                TimeForm::EpochS => vars.push(("TIMESTAMP_FORMAT", "epoch_s".into())),
                TimeForm::Record => vars.push(("TIMESTAMP_FIELD", "@record".into())),
            }
            (vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), form)
        },
    )
}

/// One step of a stream: how far event time moves, what kind of record, its group and value choices.
#[derive(Debug, Clone)]
struct Step {
    advance_ms: i64,
    behind_ms: i64,
    kind: u8,
    user: u16,
    event: u8,
    url: u8,
    form: u8,
    seconds: Value,
    viewed: Value,
}

/// An aggregated field's value in an event.
#[derive(Debug, Clone, Copy)]
enum Value {
    Absent,
    Null,
    Int(i64),
    /// A multiple of 0.25.
    Quarter(i64),
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Absent),
        1 => Just(Value::Null),
        4 => (-100i64..1_000).prop_map(Value::Int),
        1 => prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(i64::MAX - 1), Just(1i64 << 62)].prop_map(Value::Int),
        3 => (-4_000i64..4_000).prop_map(Value::Quarter),
    ]
}

fn step(users: u16, disorder: Disorder) -> impl Strategy<Value = Step> {
    let advance = prop_oneof![8 => 0i64..2_000, 1 => 0i64..120_000];
    let behind = match disorder {
        Disorder::InOrder => Just(0i64).boxed(),
        Disorder::Jitter(max) => prop_oneof![3 => Just(0i64), 1 => 0..=max].boxed(),
    };
    (advance, behind, 0u8..100, 0..users, 0u8..4, 0u8..10, 0u8..4, value(), value()).prop_map(
        |(advance_ms, behind_ms, kind, user, event, url, form, seconds, viewed)| Step {
            advance_ms,
            behind_ms,
            kind,
            user,
            event,
            url,
            form,
            seconds,
            viewed,
        },
    )
}

/// Streams with `malformed_percent` bad or unusual records mixed into events from `users` users.
pub fn streams(users: u16, disorder: Disorder, malformed_percent: u8, max_len: usize) -> impl Strategy<Value = Stream> {
    (vars(), prop::collection::vec(step(users, disorder), 1..max_len)).prop_map(move |((vars, form), steps)| {
        let mut now = START_MS;
        // The reference reads values with serde_json, which refuses numbers beyond a float anywhere in a
        // value; the streams put those only where the transform reads them.
        let huge_ok = vars.iter().any(|(name, value)| name == "AGGREGATES" && value.contains("(viewed_percent)"));
        let records = steps
            .iter()
            .map(|step| {
                now += step.advance_ms;
                let event_ms = now - step.behind_ms;
                let record_ms = if form == TimeForm::Record { event_ms } else { RECORD_MS };
                (record(step, event_ms, form, malformed_percent, huge_ok), record_ms)
            })
            .collect();
        Stream { vars, records }
    })
}

const EVENTS: [&str; 4] = ["view_item", "add_to_cart", "checkout", "search"];

/// The event time as the stream's form writes it (the `"timestamp":` member, or nothing for `@record`).
fn time_member(form: TimeForm, choice: u8, event_ms: i64) -> String {
    let sql = format_time(event_ms);
    match (form, choice % 4) {
        (TimeForm::Record, _) => String::new(),
        (TimeForm::Sql, _) | (TimeForm::Mixed, 0) => format!(r#""timestamp":"{sql}","#),
        (TimeForm::Iso, 0 | 1) | (TimeForm::Mixed, 1) => format!(r#""timestamp":"{}Z","#, sql.replace(' ', "T")),
        (TimeForm::Iso, _) | (TimeForm::Mixed, 2) => {
            // The same instant written with a +05:30 offset.
            let local = format_time(event_ms + 19_800_000).replace(' ', "T");
            format!(r#""timestamp":"{local}+05:30","#)
        }
        (TimeForm::EpochMs, _) | (TimeForm::Mixed, _) => format!(r#""timestamp":{event_ms},"#),
        // Milliseconds with an exponent are seconds too.
        (TimeForm::EpochS, 3) => format!(r#""timestamp":{event_ms}e-3,"#),
        (TimeForm::EpochS, _) if event_ms % 1000 == 0 => format!(r#""timestamp":{},"#, event_ms / 1000),
        // Seconds with a fraction; the streams' times are whole milliseconds.
        (TimeForm::EpochS, _) => {
            format!(r#""timestamp":{}.{:03},"#, event_ms.div_euclid(1000), event_ms.rem_euclid(1000))
        }
    }
}

fn member(name: &str, value: Value) -> String {
    match value {
        Value::Absent => String::new(),
        Value::Null => format!(r#","{name}":null"#),
        Value::Int(int) => format!(r#","{name}":{int}"#),
        Value::Quarter(quarters) => format!(r#","{name}":{:?}"#, quarters as f64 / 4.0),
    }
}

fn record(step: &Step, event_ms: i64, form: TimeForm, malformed_percent: u8, huge_ok: bool) -> Option<Vec<u8>> {
    let time = time_member(form, step.form, event_ms);
    let event = |time: &str| {
        format!(
            r#"{{{time}"event":"{}","user_id":"user{}","site_id":"site{}","store":{},"url":"/item/{}"{}{}}}"#,
            EVENTS[step.event as usize],
            step.user,
            step.user % 3,
            i64::from(step.user % 7) - 3,
            step.url,
            member("on_site_seconds", step.seconds),
            member("viewed_percent", step.viewed),
        )
    };
    if step.kind >= malformed_percent {
        return Some(event(&time).into_bytes());
    }
    let heartbeat =
        if form == TimeForm::Record { "{}".to_string() } else { format!("{{{}}}", time.trim_end_matches(',')) };
    // Bad, odd or special records, each with a single fault.
    Some(match step.kind % 16 {
        0 => return None,
        1 => b"\xff\xfe not utf-8".to_vec(),
        2 => event(&time).as_bytes()[..20].to_vec(),
        3 => b"[1, 2, 3]".to_vec(),
        4 => format!(r#"{{{time}"deep":{}{}}}"#, "[".repeat(80), "]".repeat(80)).into_bytes(),
        5 => event(&time).replace("\"user_id\"", "\"uid\"").into_bytes(),
        6 => event(&time).replace(&format!("\"url\":\"/item/{}\"", step.url), "\"url\":7.5").into_bytes(),
        7 if form == TimeForm::Record => event(&time).replace("\"store\":", "\"store\":true,\"was\":").into_bytes(),
        7 => event(&time).replacen("\"timestamp\":", "\"timestamp\":\"2020-11-16 25:00:00\",\"was\":", 1).into_bytes(),
        8 => event(&time_member(form, step.form, event_ms + 30 * 86_400_000 * 1_000)).into_bytes(),
        9 => heartbeat.into_bytes(),
        10 if form == TimeForm::Record => heartbeat.into_bytes(),
        // The timestamp member twice: still a heartbeat.
        10 => format!("{},{}", &heartbeat[..heartbeat.len() - 1], &heartbeat[1..]).into_bytes(),
        11 => event(&time).replace("\"event\":\"", "\"event\":\"\\u00e9\\n\\\"").into_bytes(),
        12 => format!("{},\"on_site_seconds\":\"55\"}}", event(&time).trim_end_matches('}')).into_bytes(),
        13 if !huge_ok => event(&time).into_bytes(),
        13 => format!("{},\"viewed_percent\":1e400}}", event(&time).trim_end_matches('}')).into_bytes(),
        14 => event(&time).replace("\"store\":", "\"store\":12.5,\"was\":").into_bytes(),
        _ => event(&time).replace("\"store\":", "\"store\":9223372036854775808,\"was\":").into_bytes(),
    })
}
