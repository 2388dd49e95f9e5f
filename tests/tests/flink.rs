//! The module against Flink 2.x SQL itself: the same events through the module (in the harness) and through
//! Flink's window table functions (`flink/run_queries.py`, Flink in-process, a watermark after every record),
//! row for row. Needs `FLINK_PYTHON`, a Python with `apache-flink` (`make flink` makes one; `make test` sets
//! it); without it the test says so and checks nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clickstream_aggregation::time::parse_timestamp_ms;
use harness::generate::{Generator, GeneratorConfig};
use integration_tests::readme::block;
use integration_tests::replay::{clickstream_config, replay};
use serde_json::{json, Value};
use transform_host::Limits;

type Row = BTreeMap<String, Value>;

const WATERMARK_DELAY_MS: i64 = 5_000;
const HOP: &str = "TABLE(HOP(TABLE clickstream, DESCRIPTOR(`timestamp`), INTERVAL '10' SECOND, INTERVAL '5' MINUTE))";

const SESSION_BY_USER: &str =
    "TABLE(SESSION(TABLE clickstream PARTITION BY user_id, DESCRIPTOR(`timestamp`), INTERVAL '30' SECOND))";

/// Sessions' edge cases with a 30 s gap and the 5 s delay, seconds after 19:00:00 in arrival order: u1's
/// second event touches its first session's end (one session); u2's is 1 s past it (two); u3's third
/// bridges its two sessions; u5's first fires u2's and u4's first sessions, and u4's next event, within
/// the gap of its fired session, opens a new one.
fn session_edges() -> Vec<Vec<u8>> {
    let clicks = [
        ("u1", 0),
        ("u2", 0),
        ("u3", 0),
        ("u4", 0),
        ("u1", 30),
        ("u2", 31),
        ("u3", 33),
        ("u3", 16),
        ("u5", 40),
        ("u4", 25),
        ("u5", 200),
    ];
    clicks
        .iter()
        .map(|(user, second)| {
            json!({"timestamp": format!("2020-11-16 19:0{}:{:02}", second / 60, second % 60), "event": "view_item",
                   "user_id": user, "site_id": "s", "url": "/item/1", "on_site_seconds": 5, "viewed_percent": 50})
            .to_string()
            .into_bytes()
        })
        .collect()
}

/// How a Window Top-N query ranks, to compare its rows up to Flink's undefined order among ties.
struct Ranking {
    n: usize,
    by: &'static str,
    partition_by: &'static [&'static str],
    rank_field: &'static str,
}

struct Case {
    name: &'static str,
    env: Vec<(&'static str, &'static str)>,
    sql: String,
    events: Vec<Vec<u8>>,
    ranking: Option<Ranking>,
    /// As the README says.
    rows: usize,
}

/// A stream with disorder (up to 20 s behind), partly late events (the watermark waits 5 s) and wholly late
/// ones (10 minutes behind), two events a second for about 20 minutes.
fn disordered_stream(seed: u64) -> Vec<Vec<u8>> {
    let generator = GeneratorConfig {
        seed,
        events: 2_400,
        users: 40,
        rate_per_sec: 2.0,
        jitter_ms: 20_000,
        late_percent: 2.0,
        ..Default::default()
    };
    Generator::new(generator).collect()
}

/// The same with some `user_id`s null and some absent, which `COUNT(DISTINCT user_id)` does not count.
fn with_missing_users(events: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    events
        .into_iter()
        .enumerate()
        .map(|(index, line)| {
            let mut event: serde_json::Map<String, Value> = serde_json::from_slice(&line).unwrap();
            match index % 11 {
                3 => drop(event.insert("user_id".into(), Value::Null)),
                7 => drop(event.remove("user_id")),
                _ => {}
            }
            Value::Object(event).to_string().into_bytes()
        })
        .collect()
}

fn top_n_sql(inner: &str, ranking: &Ranking) -> String {
    let partition: String = ranking.partition_by.iter().map(|field| format!(", {field}")).collect();
    format!(
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end{partition} \
         ORDER BY {} DESC) AS {} FROM ({inner})) WHERE {} <= {}",
        ranking.by, ranking.rank_field, ranking.rank_field, ranking.n
    )
}

fn cases() -> Vec<Case> {
    let stream = disordered_stream(21);
    let distinct_inner = format!(
        "SELECT window_start, window_end, url, COUNT(DISTINCT user_id) AS visitors FROM {HOP} \
         GROUP BY window_start, window_end, url"
    );
    let top_pages = Ranking { n: 3, by: "visitors", partition_by: &[], rank_field: "row_num" };
    let by_event_inner = format!(
        "SELECT window_start, window_end, event, url, COUNT(*) AS hits, COUNT(DISTINCT user_id) AS visitors \
         FROM {HOP} GROUP BY window_start, window_end, event, url"
    );
    let top_per_event = Ranking { n: 2, by: "hits", partition_by: &["event"], rank_field: "row_num" };
    let top_cumulated = Ranking { n: 2, by: "n", partition_by: &[], rank_field: "row_num" };
    vec![
        Case {
            name: "seed job: count per user, event and url",
            env: vec![],
            sql: format!(
                "SELECT window_start, window_end, user_id, event, url, COUNT(1) AS event_count FROM {HOP} \
                 GROUP BY window_start, window_end, user_id, event, url"
            ),
            events: stream.clone(),
            ranking: None,
            rows: 48_498,
        },
        Case {
            name: "COUNT(DISTINCT user_id) per site and url, null and absent users",
            env: vec![("GROUP_BY", "site_id,url"), ("AGGREGATES", "visitors=count_distinct(user_id),hits=count")],
            sql: format!(
                "SELECT window_start, window_end, site_id, url, COUNT(DISTINCT user_id) AS visitors, \
                 COUNT(*) AS hits FROM {HOP} GROUP BY window_start, window_end, site_id, url"
            ),
            events: with_missing_users(stream.clone()),
            ranking: None,
            rows: 4_391,
        },
        Case {
            name: "Top-3 pages by unique visitors",
            env: vec![
                ("GROUP_BY", "url"),
                ("AGGREGATES", "visitors=count_distinct(user_id)"),
                ("TOP_N", "3"),
                ("TOP_N_RANK_FIELD", "row_num"),
            ],
            sql: top_n_sql(&distinct_inner, &top_pages),
            events: stream.clone(),
            ranking: Some(top_pages),
            rows: 453,
        },
        Case {
            name: "Top-2 pages by views per event type",
            env: vec![
                ("GROUP_BY", "event,url"),
                ("AGGREGATES", "hits=count,visitors=count_distinct(user_id)"),
                ("TOP_N", "2"),
                ("TOP_N_PARTITION_BY", "event"),
                ("TOP_N_RANK_FIELD", "row_num"),
            ],
            sql: top_n_sql(&by_event_inner, &top_per_event),
            events: stream.clone(),
            ranking: Some(top_per_event),
            rows: 1_201,
        },
        Case {
            name: "TUMBLE: events and seconds on site per user",
            env: vec![
                ("WINDOW", "tumble"),
                ("WINDOW_SIZE", "1m"),
                ("GROUP_BY", "user_id"),
                ("AGGREGATES", "n=count,secs=sum(on_site_seconds),longest=max(on_site_seconds)"),
            ],
            sql: "SELECT window_start, window_end, user_id, COUNT(*) AS n, SUM(on_site_seconds) AS secs, \
                  MAX(on_site_seconds) AS longest \
                  FROM TABLE(TUMBLE(TABLE clickstream, DESCRIPTOR(`timestamp`), INTERVAL '1' MINUTE)) \
                  GROUP BY window_start, window_end, user_id"
                .into(),
            events: stream.clone(),
            ranking: None,
            rows: 709,
        },
        Case {
            name: "CUMULATE: events and unique visitors per page so far in each 10 minutes, by the minute",
            env: vec![
                ("WINDOW", "cumulate"),
                ("WINDOW_SIZE", "10m"),
                ("WINDOW_STEP", "1m"),
                ("GROUP_BY", "url"),
                ("AGGREGATES", "n=count,visitors=count_distinct(user_id)"),
            ],
            sql: "SELECT window_start, window_end, url, COUNT(*) AS n, COUNT(DISTINCT user_id) AS visitors \
                  FROM TABLE(CUMULATE(TABLE clickstream, DESCRIPTOR(`timestamp`), INTERVAL '1' MINUTE, \
                  INTERVAL '10' MINUTE)) GROUP BY window_start, window_end, url"
                .into(),
            events: stream.clone(),
            ranking: None,
            rows: 247,
        },
        Case {
            name: "CUMULATE with Top-2 pages of each window",
            env: vec![
                ("WINDOW", "cumulate"),
                ("WINDOW_SIZE", "10m"),
                ("WINDOW_STEP", "1m"),
                ("GROUP_BY", "url"),
                ("AGGREGATES", "n=count"),
                ("TOP_N", "2"),
                ("TOP_N_RANK_FIELD", "row_num"),
            ],
            sql: top_n_sql(
                "SELECT window_start, window_end, url, COUNT(*) AS n FROM TABLE(CUMULATE(TABLE clickstream, \
                 DESCRIPTOR(`timestamp`), INTERVAL '1' MINUTE, INTERVAL '10' MINUTE)) \
                 GROUP BY window_start, window_end, url",
                &top_cumulated,
            ),
            events: stream.clone(),
            ranking: Some(top_cumulated),
            rows: 62,
        },
        Case {
            name: "SESSION: each user's sessions ended by 30 s without a click",
            env: vec![
                ("WINDOW", "session"),
                ("SESSION_GAP", "30s"),
                ("GROUP_BY", "user_id"),
                ("AGGREGATES", "n=count,secs=sum(on_site_seconds),pages=count_distinct(url)"),
            ],
            sql: format!(
                "SELECT window_start, window_end, user_id, COUNT(*) AS n, SUM(on_site_seconds) AS secs, \
                 COUNT(DISTINCT url) AS pages FROM {SESSION_BY_USER} GROUP BY window_start, window_end, user_id"
            ),
            events: stream,
            ranking: None,
            rows: 598,
        },
        Case {
            name: "SESSION: touching, bridging, and near a session that fired",
            env: vec![("WINDOW", "session"), ("SESSION_GAP", "30s"), ("GROUP_BY", "user_id")],
            sql: format!(
                "SELECT window_start, window_end, user_id, COUNT(1) AS event_count FROM {SESSION_BY_USER} \
                 GROUP BY window_start, window_end, user_id"
            ),
            events: session_edges(),
            ranking: None,
            rows: 8,
        },
    ]
}

/// The module's rows for a case, windows closed at the end of the input as Flink closes them.
fn module_rows(case: &Case) -> Vec<Row> {
    let delay = format!("{WATERMARK_DELAY_MS}ms");
    let mut env = case.env.clone();
    env.push(("WATERMARK_DELAY", &delay));
    let (collected, result) = replay(case.events.clone(), &env, clickstream_config(), Limits::default(), true);
    result.unwrap_or_else(|failure| panic!("{}: the module failed: {failure}", case.name));
    collected.rows().map(|row| with_window_ms(&row.value_text())).collect()
}

/// A row as the module writes it, its window bounds as epoch milliseconds, as Flink's are here.
fn with_window_ms(value: &str) -> Row {
    let mut row: Row = serde_json::from_str(value).unwrap();
    for bound in ["window_start", "window_end"] {
        let text = row[bound].as_str().unwrap().to_string();
        row.insert(bound.into(), json!(parse_timestamp_ms(&text).unwrap()));
    }
    row
}

/// Runs every case's query on Flink, with the watermark `delay_ms` behind; rows by case name.
fn flink_rows(python: &Path, cases: &[Case], delay_ms: i64, dir: &Path) -> BTreeMap<String, Vec<Row>> {
    let mut queries = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let events = dir.join(format!("events-{index}.jsonl"));
        let mut text = Vec::new();
        for line in &case.events {
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        std::fs::write(&events, text).unwrap();
        queries.push(json!({
            "name": case.name, "events": events, "watermark_delay_ms": delay_ms, "sql": case.sql,
        }));
    }
    let queries_path = dir.join("queries.json");
    std::fs::write(&queries_path, serde_json::to_vec(&queries).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../flink/run_queries.py");
    let output = Command::new(python).arg(script).arg(&queries_path).output().expect("FLINK_PYTHON runs");
    assert!(output.status.success(), "Flink failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let mut rows: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let mut line: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
        let name = line["query"].as_str().unwrap().to_string();
        rows.entry(name).or_default().push(serde_json::from_value(line.remove("row").unwrap()).unwrap());
    }
    rows
}

/// What both sides must agree on. Without a ranking, every row. With one, per window and partition: the
/// ranked-by value at each rank, and the rows (rank left out) except those tied with the last kept row of a
/// full partition, which Flink may choose among as it likes.
fn comparable(rows: &[Row], ranking: Option<&Ranking>) -> Vec<String> {
    let Some(ranking) = ranking else {
        let mut rows: Vec<String> = rows.iter().map(|row| serde_json::to_string(row).unwrap()).collect();
        rows.sort();
        return rows;
    };
    let mut partitions: BTreeMap<Vec<String>, Vec<&Row>> = BTreeMap::new();
    for row in rows {
        let mut key = vec![row["window_start"].to_string(), row["window_end"].to_string()];
        key.extend(ranking.partition_by.iter().map(|field| row[*field].to_string()));
        partitions.entry(key).or_default().push(row);
    }
    let mut out = Vec::new();
    for (key, mut rows) in partitions {
        rows.sort_by_key(|row| row[ranking.rank_field].as_u64());
        let values: Vec<String> = rows.iter().map(|row| row[ranking.by].to_string()).collect();
        out.push(format!("{key:?} ranked values {values:?}"));
        let boundary = (rows.len() == ranking.n).then(|| values[values.len() - 1].clone());
        for row in rows {
            if Some(row[ranking.by].to_string()) == boundary {
                continue;
            }
            let mut row = row.clone();
            row.remove(ranking.rank_field);
            out.push(serde_json::to_string(&row).unwrap());
        }
    }
    out.sort();
    out
}

/// The Python with Flink, or `None` after saying the test is skipped.
fn flink_python(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("FLINK_PYTHON").map(PathBuf::from);
    if python.is_none() {
        eprintln!(
            "SKIPPED {test}: FLINK_PYTHON is not set (`make flink` makes a Python with Flink; `make test` sets it)"
        );
    }
    python
}

/// Runs the cases' queries on Flink in a directory of their own.
fn run_on_flink(python: &Path, cases: &[Case], delay_ms: i64, name: &str) -> BTreeMap<String, Vec<Row>> {
    let dir = std::env::temp_dir().join(format!("flink-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rows = flink_rows(python, cases, delay_ms, &dir);
    std::fs::remove_dir_all(&dir).unwrap();
    rows
}

#[test]
fn module_agrees_with_flink_sql() {
    let Some(python) = flink_python("module_agrees_with_flink_sql") else { return };
    let cases = cases();
    let flink = run_on_flink(&python, &cases, WATERMARK_DELAY_MS, "comparison");
    for case in &cases {
        let module = module_rows(case);
        let flink = flink.get(case.name).map(Vec::as_slice).unwrap_or_default();
        let (ours, theirs) = (comparable(&module, case.ranking.as_ref()), comparable(flink, case.ranking.as_ref()));
        if let Some(at) = ours.iter().zip(&theirs).position(|(ours, theirs)| ours != theirs) {
            panic!("{}: differs from Flink\n  module: {}\n  flink:  {}", case.name, ours[at], theirs[at]);
        }
        assert_eq!(ours.len(), theirs.len(), "{}: as many rows as Flink", case.name);
        assert_eq!(module.len(), case.rows, "{}: the module's rows, as the README counts them", case.name);
        eprintln!("{}: {} rows, as Flink's", case.name, module.len());
    }
}

/// The README's window kind examples: its SQL, run on Flink over its input, gives the rows it shows (the
/// module's, which `tests/tests/readme_examples.rs` checks), with the module's default watermark delay.
#[test]
fn the_readme_window_kind_examples_give_flinks_rows() {
    let Some(python) = flink_python("the_readme_window_kind_examples_give_flinks_rows") else { return };
    let events: Vec<Vec<u8>> = block("windows input").iter().map(|line| line.as_bytes().to_vec()).collect();
    let cases: Vec<Case> = ["tumble", "cumulate", "session"]
        .into_iter()
        .map(|kind| Case {
            name: kind,
            env: Vec::new(),
            sql: block(&format!("{kind} sql")).join("\n"),
            events: events.clone(),
            ranking: None,
            rows: 0, // unused: the README's rows are the expectation
        })
        .collect();
    let flink = run_on_flink(&python, &cases, 1, "readme");
    for case in &cases {
        let shown: Vec<Row> = block(&format!("{} output", case.name)).iter().map(|row| with_window_ms(row)).collect();
        let flink = flink.get(case.name).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(comparable(flink, None), comparable(&shown, None), "{}: Flink's rows and the README's", case.name);
    }
}
