//! The live pipeline against a real Kafka-protocol broker. `make test` starts one (tansu, on a free
//! loopback port) and names it in KAFKA_BROKERS; where that is not set, each test says so in one line
//! and passes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use transform_host::guests::CopyingGuest;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn brokers(test: &str) -> Option<String> {
    match std::env::var("KAFKA_BROKERS") {
        Ok(brokers) if !brokers.is_empty() => Some(brokers),
        _ => {
            eprintln!("SKIPPED {test}: KAFKA_BROKERS is not set (`make test` starts a broker and sets it)");
            None
        }
    }
}

fn harness(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_harness")).args(args).current_dir(root()).output().expect("runs");
    assert!(out.status.success(), "harness {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A scratch folder, and names unique to this test run.
struct Scratch {
    dir: PathBuf,
    tag: String,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        let tag = format!("{test}-{}-{}", std::process::id(), Instant::now().elapsed().as_nanos());
        let dir = std::env::temp_dir().join(format!("harness-live-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir, tag }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    /// A transform.yaml from `<tag>-in` to `<tag>-rows` and `<tag>-dlq`, with these env settings.
    fn transform_yaml(&self, env: &[(&str, &str)]) -> String {
        let env: String = env.iter().map(|(key, value)| format!("  {key}: \"{value}\"\n")).collect();
        let yaml = format!(
            "name: {tag}\ninput-topic: {tag}-in\noutput-topics:\n  - {tag}-rows\n  - {tag}-dlq\nenv:\n{env}",
            tag = self.tag
        );
        let path = self.path("transform.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn topic(&self, which: &str) -> String {
        format!("{}-{which}", self.tag)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates the three topics, `partitions` each.
fn create_topics(brokers: &str, scratch: &Scratch, partitions: u32) {
    let empty = scratch.path("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    for which in ["in", "rows", "dlq"] {
        let topic = scratch.topic(which);
        harness(&[
            "produce",
            "--brokers",
            brokers,
            "--topic",
            &topic,
            "--partitions",
            &partitions.to_string(),
            "--input",
            &empty,
        ]);
    }
}

/// A `harness run` in the background; its stderr is collected.
struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn start(brokers: &str, wasm: &str, yaml: &str) -> Running {
        Running::start_with(brokers, wasm, yaml, &[])
    }

    fn start_with(brokers: &str, wasm: &str, yaml: &str, flags: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(["run", "--brokers", brokers, "--wasm", wasm, "--transform-yaml", yaml])
            .args(["--session-timeout", "6s", "--commit-interval", "1s"])
            .args(flags)
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let lines = BufReader::new(child.stderr.take().unwrap());
        let collected = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                let mut text = collected.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Running { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the group gave this process partitions and each found where it starts reading.
    fn wait_for_partitions(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let holds = |log: &str| {
            let Some(assigned) = log.lines().rev().find_map(|line| line.strip_prefix("harness: assigned partitions ["))
            else {
                return false;
            };
            let partitions: Vec<&str> = assigned.trim_end_matches(']').split(", ").filter(|p| !p.is_empty()).collect();
            let ready = |partition: &&str| {
                let (starts, resumes) =
                    (format!("partition {partition} starts at"), format!("partition {partition} resumes at"));
                log.lines().any(|line| line.contains(&starts) || line.contains(&resumes))
            };
            !partitions.is_empty() && partitions.iter().all(ready)
        };
        while !holds(&self.stderr()) {
            assert!(Instant::now() < deadline, "no partitions after 60 s:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Ctrl-C: it commits and stops.
    fn interrupt(mut self) -> String {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(status.success(), "{}", self.stderr());
        self.stderr()
    }

    /// A crash: no final commit.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record of `topic` from its start, once nothing new came for 5 s: (key, value, headers).
fn consume(brokers: &str, topic: &str) -> Vec<serde_json::Value> {
    consume_until_idle(brokers, topic, "5s")
}

/// Every record of `topic` from its start, once nothing new came for `idle`.
fn consume_until_idle(brokers: &str, topic: &str, idle: &str) -> Vec<serde_json::Value> {
    let out = harness(&[
        "consume",
        "--brokers",
        brokers,
        "--topic",
        topic,
        "--from-beginning",
        "--format",
        "records",
        "--idle-exit",
        idle,
    ]);
    String::from_utf8_lossy(&out.stdout).lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn key_value(record: &serde_json::Value) -> (String, String) {
    (record["key"].to_string(), record["value"].to_string())
}

fn module() -> String {
    root().join("clickstream-aggregation.wasm").to_str().unwrap().to_string()
}

/// A transform that copies each record to its first output: every input record must come out, at least once.
fn copy_wat() -> String {
    CopyingGuest::default().wat()
}

/// The seed's producer, the module run live, and both outputs: the rows and dead letters equal what
/// `harness replay` predicts for the same records on the same partitions.
#[test]
fn a_live_run_writes_what_a_replay_predicts() {
    let Some(brokers) = brokers("a_live_run_writes_what_a_replay_predicts") else { return };
    let scratch = Scratch::new("predicts");
    // A long watermark delay: no event is late however the partitions interleave on the way in.
    let yaml = scratch.transform_yaml(&[("WATERMARK_DELAY", "10m")]);
    let events = scratch.path("events.jsonl");
    harness(&[
        "generate",
        "--events",
        "3000",
        "--users",
        "40",
        "--jitter",
        "2s",
        "--malformed-percent",
        "1",
        "--output",
        &events,
    ]);
    create_topics(&brokers, &scratch, 3);
    let running = Running::start(&brokers, &module(), &yaml);
    running.wait_for_partitions();
    harness(&[
        "produce",
        "--brokers",
        &brokers,
        "--topic",
        &scratch.topic("in"),
        "--input",
        &events,
        "--close-windows",
        "--quiet",
    ]);
    let rows = consume(&brokers, &scratch.topic("rows"));
    let dead = consume(&brokers, &scratch.topic("dlq"));
    let log = running.interrupt();
    assert!(log.contains("partition 0: committed at offset "), "{log}");

    let (predicted_rows, predicted_dead) = (scratch.path("rows.jsonl"), scratch.path("dlq.jsonl"));
    harness(&[
        "replay",
        "--wasm",
        &module(),
        "--transform-yaml",
        &yaml,
        "--input",
        &events,
        "--partitions",
        "3",
        "--close-windows",
        "--format",
        "records",
        "--output",
        &predicted_rows,
        "--dlq",
        &predicted_dead,
    ]);
    let read = |path: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    };
    let sorted = |records: &[serde_json::Value]| {
        let mut pairs: Vec<(String, String)> = records.iter().map(key_value).collect();
        pairs.sort();
        pairs
    };
    let same = |what: &str, live: Vec<(String, String)>, predicted: Vec<(String, String)>| {
        let first_difference = live.iter().zip(&predicted).find(|(a, b)| a != b);
        assert!(
            live == predicted,
            "{what}: {} live, {} predicted; first difference {first_difference:?}",
            live.len(),
            predicted.len()
        );
    };
    assert!(rows.len() > 1_000, "{} rows", rows.len());
    same("rows", sorted(&rows), sorted(&read(&predicted_rows)));
    assert!(!dead.is_empty());
    same("dead letters", sorted(&dead), sorted(&read(&predicted_dead)));
}

/// `harness run` killed mid-stream and started again: it reads again from its last commit, so every
/// record comes out, and a record that comes out twice is the same both times.
#[test]
fn a_run_killed_mid_stream_loses_nothing() {
    let Some(brokers) = brokers("a_run_killed_mid_stream_loses_nothing") else { return };
    let scratch = Scratch::new("killed");
    let yaml = scratch.transform_yaml(&[]);
    let copy = scratch.path("copy.wat");
    std::fs::write(&copy, copy_wat()).unwrap();
    let events = scratch.path("events.jsonl");
    harness(&["generate", "--events", "4000", "--users", "40", "--output", &events]);
    create_topics(&brokers, &scratch, 3);
    let first = Running::start(&brokers, &copy, &yaml);
    first.wait_for_partitions();
    let producer = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "produce",
            "--brokers",
            &brokers,
            "--topic",
            &scratch.topic("in"),
            "--input",
            &events,
            "--rate",
            "1000",
            "--quiet",
        ])
        .current_dir(root())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2_000));
    first.kill();
    let second = Running::start(&brokers, &copy, &yaml);
    assert!(producer.wait_with_output().unwrap().status.success());
    second.wait_for_partitions();
    let copies = consume(&brokers, &scratch.topic("rows"));
    second.interrupt();
    let inputs = consume(&brokers, &scratch.topic("in"));
    let mut seen = std::collections::BTreeMap::new();
    for record in &copies {
        *seen.entry(key_value(record)).or_insert(0) += 1;
    }
    let missing: Vec<_> = inputs.iter().map(key_value).filter(|record| !seen.contains_key(record)).collect();
    assert!(missing.is_empty(), "{} of {} records lost, e.g. {:?}", missing.len(), inputs.len(), missing.first());
    assert!(copies.len() >= inputs.len());
}

/// Two runs of the copying transform in one group, on four partitions, once the first has given some of
/// its partitions up to the second.
fn two_copying_runs_on_four_partitions(brokers: &str, scratch: &Scratch) -> (Running, Running) {
    let yaml = scratch.transform_yaml(&[]);
    let copy = scratch.path("copy.wat");
    std::fs::write(&copy, copy_wat()).unwrap();
    create_topics(brokers, scratch, 4);
    let first = Running::start(brokers, &copy, &yaml);
    first.wait_for_partitions();
    let second = Running::start(brokers, &copy, &yaml);
    second.wait_for_partitions();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !first.stderr().contains("revoked partitions") {
        assert!(Instant::now() < deadline, "no rebalance:\n{}", first.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    (first, second)
}

/// Two `harness run` processes in one group share the partitions, and between them copy every record.
#[test]
fn two_runs_in_one_group_share_the_partitions() {
    let Some(brokers) = brokers("two_runs_in_one_group_share_the_partitions") else { return };
    let scratch = Scratch::new("shared");
    let events = scratch.path("events.jsonl");
    harness(&["generate", "--events", "2000", "--users", "40", "--output", &events]);
    let (first, second) = two_copying_runs_on_four_partitions(&brokers, &scratch);
    harness(&["produce", "--brokers", &brokers, "--topic", &scratch.topic("in"), "--input", &events, "--quiet"]);
    let copies = consume(&brokers, &scratch.topic("rows"));
    let (first_log, second_log) = (first.interrupt(), second.interrupt());
    let records_read = |log: &str| -> u64 {
        let stop_line = log.lines().find(|line| line.contains(" records read")).unwrap_or_default();
        stop_line.split(" records read").next().and_then(|head| head.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
    };
    assert!(records_read(&first_log) > 0 && records_read(&second_log) > 0, "{first_log}\n{second_log}");
    assert!(records_read(&first_log) + records_read(&second_log) >= 2_000, "{first_log}\n{second_log}");
    let inputs = consume(&brokers, &scratch.topic("in"));
    let mut expected: Vec<_> = inputs.iter().map(key_value).collect();
    let mut got: Vec<_> = copies.iter().map(key_value).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
}

/// The producer's failures say what went wrong: a missing topic (and how to create it), a record larger
/// than the broker takes, each with exit status 2 and what was acknowledged so far.
#[test]
fn produce_reports_a_missing_topic_and_a_record_too_large() {
    let Some(brokers) = brokers("produce_reports_a_missing_topic_and_a_record_too_large") else { return };
    let scratch = Scratch::new("failures");
    let run =
        |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_harness")).args(args).current_dir(root()).output().unwrap();
    let missing = run(&["produce", "--brokers", &brokers, "--topic", &scratch.topic("nowhere"), "--events", "1"]);
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("does not exist; pass --partitions N to create it"), "{stderr}");
    let big = scratch.path("big.jsonl");
    std::fs::write(&big, format!("{{\"timestamp\":\"2020-11-16 19:00:00\",\"pad\":\"{}\"}}\n", "x".repeat(2 << 20)))
        .unwrap();
    let too_large =
        run(&["produce", "--brokers", &brokers, "--topic", &scratch.topic("in"), "--partitions", "1", "--input", &big]);
    assert_ne!(too_large.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&too_large.stderr);
    assert!(stderr.to_lowercase().contains("too large"), "{stderr}");
}

/// `run` sizes each input batch's outputs as the broker's producer loop writes them: over
/// `--batch-max-bytes` as stored, the processor fails and nothing is written; deployed with zstd, the same
/// compressible output fits and is written.
#[test]
fn a_run_refuses_an_output_batch_over_the_limit_unless_compression_makes_it_fit() {
    let Some(brokers) = brokers("a_run_refuses_an_output_batch_over_the_limit_unless_compression_makes_it_fit") else {
        return;
    };
    let scratch = Scratch::new("batchlimit");
    let yaml = scratch.transform_yaml(&[]);
    let copy = scratch.path("copy.wat");
    std::fs::write(&copy, copy_wat()).unwrap();
    let large = scratch.path("large.jsonl");
    let event = serde_json::json!({"timestamp": "2020-11-16 19:00:00", "event": "view", "user_id": "u", "url": "x".repeat(50_000)});
    std::fs::write(&large, format!("{event}\n")).unwrap();
    create_topics(&brokers, &scratch, 1);
    harness(&["produce", "--brokers", &brokers, "--topic", &scratch.topic("in"), "--input", &large, "--quiet"]);
    let limit = ["--from-offset", "+0", "--batch-max-bytes", "40KiB"];
    let refused = Running::start_with(&brokers, &copy, &yaml, &limit);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !refused.stderr().contains("refuses a batch of 1 records") {
        assert!(Instant::now() < deadline, "no refusal:\n{}", refused.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = refused.interrupt();
    assert!(log.contains("over its limit of 40960 bytes"), "{log}");
    let compressed = Running::start_with(&brokers, &copy, &yaml, &[&limit[..], &["--compression", "zstd"]].concat());
    let copies = consume(&brokers, &scratch.topic("rows"));
    compressed.interrupt();
    assert_eq!(copies.len(), 1, "written once, after the refused attempts wrote nothing");
}

/// Every form of `--from-offset`, and none, on a partition that already holds 300 records in one batch:
/// the start is found in the log itself (tansu's ListOffsets answers 1 for its end), by the broker's rules,
/// including `-N` and `+N` past the log's ends; the start is committed at once, so a trap before any other
/// commit reads again from it, and Ctrl-C names each partition's commit.
#[test]
fn a_first_start_finds_its_offset_in_the_log_for_every_from_offset() {
    let Some(brokers) = brokers("a_first_start_finds_its_offset_in_the_log_for_every_from_offset") else { return };
    let scratch = Scratch::new("starts");
    let yaml = scratch.transform_yaml(&[]);
    let copy = scratch.path("copy.wat");
    std::fs::write(&copy, copy_wat()).unwrap();
    let events = scratch.path("events.jsonl");
    let lines: Vec<String> = (0..300)
        .map(|i| {
            let time = format!("2020-11-16 19:{:02}:{:02}", i / 60, i % 60);
            serde_json::json!({"timestamp": time, "event": "view", "user_id": "u", "url": "/"}).to_string()
        })
        .collect();
    std::fs::write(&events, lines.join("\n")).unwrap();
    create_topics(&brokers, &scratch, 1);
    harness(&["produce", "--brokers", &brokers, "--topic", &scratch.topic("in"), "--input", &events, "--quiet"]);
    // Record 100's time: 2020-11-16 19:01:40 UTC.
    let at_100 = format!("@{}", 1_605_553_200_000i64 + 100_000);
    let cases: [(&str, Option<&str>, i64); 6] = [
        ("none", None, 300),
        ("time", Some(&at_100), 100),
        ("plus", Some("+50"), 50),
        ("plus-past-end", Some("+1000"), 299),
        ("minus", Some("-10"), 290),
        ("minus-past-start", Some("-1000"), 1),
    ];
    let runs: Vec<(&str, i64, Running)> = cases
        .iter()
        .map(|&(name, from, start)| {
            let group = format!("{}-{name}", scratch.tag);
            let mut flags = vec!["--group", &group];
            if let Some(from) = from {
                flags.extend(["--from-offset", from]);
            }
            (name, start, Running::start_with(&brokers, &copy, &yaml, &flags))
        })
        .collect();
    for (name, start, run) in runs {
        let expected = format!("partition 0 starts at offset {start}\n");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !run.stderr().contains(&expected) {
            assert!(Instant::now() < deadline, "{name}: no start at {start}:\n{}", run.stderr());
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_millis(500));
        let log = run.interrupt();
        assert!(log.contains(&format!(" {} records read", 300 - start)), "{name}:\n{log}");
        assert!(log.contains("partition 0: committed at offset 300"), "{name}:\n{log}");
    }
    // A transform that traps on every record: each restart reads again from the start, 290.
    let trap = scratch.path("trap.wat");
    // It traps on the first record of its life, and its life ends with each trap.
    std::fs::write(&trap, CopyingGuest { trap_after: Some(1), ..CopyingGuest::default() }.wat()).unwrap();
    let group = format!("{}-trap", scratch.tag);
    let trapping = Running::start_with(&brokers, &trap, &yaml, &["--group", &group, "--from-offset", "-10"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while trapping.stderr().matches("reads again from offset").count() < 2 {
        assert!(Instant::now() < deadline, "no second restart:\n{}", trapping.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = trapping.interrupt();
    let restarts: Vec<&str> = log.lines().filter(|line| line.contains("reads again from offset")).collect();
    assert!(restarts.iter().all(|line| line.contains("reads again from offset 290 ")), "{log}");
    assert!(log.contains("partition 0: committed at offset 290"), "{log}");
}

/// A file of `count` aggregate rows of one window, one user each, with `event_count` = the user's number.
fn aggregate_rows(scratch: &Scratch, name: &str, count: u32) -> String {
    let rows: String = (0..count)
        .map(|user| {
            format!(
                "{{\"window_start\":\"2020-11-16 19:00:00\",\"window_end\":\"2020-11-16 19:05:00\",\"user_id\":\"u{user}\",\"event_count\":{user}}}\n"
            )
        })
        .collect();
    let path = scratch.path(name);
    std::fs::write(&path, rows).unwrap();
    path
}

/// `harness produce` of the aggregate rows in `file` to `topic` (created with one partition).
fn produce_rows_command(brokers: &str, topic: &str, file: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harness"));
    command
        .args(["produce", "--brokers", brokers, "--topic", topic, "--partitions", "1", "--input", file, "--quiet"])
        .args(["--time-field", "window_start"])
        .current_dir(root());
    command
}

/// `harness produce` of the aggregate rows in `file` to `topic` (created with one partition), at `rate`
/// records a second if given, in the background.
fn produce_rows(brokers: &str, topic: &str, file: &str, rate: Option<&str>) -> Child {
    produce_rows_command(brokers, topic, file).args(rate.map(|rate| ["--rate", rate]).iter().flatten()).spawn().unwrap()
}

/// `harness consume` from the start of `topic` until 3 s pass with no record, in the background, its
/// stdout and stderr piped.
fn consume_piped(brokers: &str, topic: &str, flags: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["consume", "--brokers", brokers, "--topic", topic, "--from-beginning", "--idle-exit", "3s"])
        .args(flags)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Regression (top_table_only_on_a_terminal): `consume --top 3 | cat` showed nothing but a last table on
/// stderr. Into a pipe, each refresh writes a whole table to stdout, a blank line between.
#[test]
fn consume_top_writes_a_whole_table_per_refresh_to_a_pipe() {
    let Some(brokers) = brokers("consume_top_writes_a_whole_table_per_refresh_to_a_pipe") else { return };
    let scratch = Scratch::new("toppipe");
    let topic = scratch.topic("rows");
    let none = aggregate_rows(&scratch, "none.jsonl", 0);
    assert!(produce_rows(&brokers, &topic, &none, None).wait().unwrap().success());
    let consumer = consume_piped(&brokers, &topic, &["--top", "3"]);
    let rows = aggregate_rows(&scratch, "rows.jsonl", 2_500);
    let mut producer = produce_rows(&brokers, &topic, &rows, Some("1000"));
    let out = consumer.wait_with_output().unwrap();
    assert!(producer.wait().unwrap().success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tables: Vec<&str> = stdout.split("\n\n").collect();
    assert!(tables.len() >= 2, "one table a second while rows arrive: {stdout}");
    for table in &tables {
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].ends_with(" rows read"), "{table}");
        assert_eq!(
            lines[1], "busiest groups in the last closed window [2020-11-16 19:00:00, 2020-11-16 19:05:00):",
            "{table}"
        );
        assert!(lines.len() == 6 && !table.contains('\x1b'), "a header and 3 rows, no terminal codes: {table}");
    }
    let last: Vec<&str> = tables.last().unwrap().lines().collect();
    assert_eq!(last[0], "2500 rows read");
    assert!(last[3].split_whitespace().eq(["u2499", "2499"]), "{}", last[3]);
}

/// Regression (consume_closed_pipe_was_a_failure): `harness consume … | head -2` printed "Broken pipe"
/// and exited 2. A reader that has seen enough ends consume quietly with status 0, rows or `--top`.
#[test]
fn a_reader_that_closes_the_pipe_ends_consume_quietly() {
    let Some(brokers) = brokers("a_reader_that_closes_the_pipe_ends_consume_quietly") else { return };
    let scratch = Scratch::new("closedpipe");
    let topic = scratch.topic("rows");
    let rows = aggregate_rows(&scratch, "rows.jsonl", 3_000);
    assert!(produce_rows(&brokers, &topic, &rows, None).wait().unwrap().success());
    let read_then_close = |mut consumer: Child| {
        let mut first = String::new();
        BufReader::new(consumer.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let out = consumer.wait_with_output().unwrap();
        (first, out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // 3,000 rows do not fit in the pipe: writing them finds it closed.
    let (first, status, stderr) = read_then_close(consume_piped(&brokers, &topic, &[]));
    assert!(first.starts_with("{\"window_start\""), "{first}");
    assert!(status.success() && stderr.is_empty(), "{status}: {stderr}");
    // The next table, drawn as more rows arrive, finds it closed.
    let consumer = consume_piped(&brokers, &topic, &["--top", "3"]);
    let mut producer = produce_rows(&brokers, &topic, &aggregate_rows(&scratch, "later.jsonl", 2_000), Some("1000"));
    let (first, status, stderr) = read_then_close(consumer);
    assert!(first.ends_with(" rows read\n"), "{first}");
    assert!(status.success() && stderr.is_empty(), "{status}: {stderr}");
    assert!(producer.wait().unwrap().success());
}

/// Two runs in one group, one killed with `kill -9`: within the session timeout and one more (the
/// survivor's check of the group), every partition is processed again. tansu answers the survivor's
/// SyncGroup with the old assignment; the survivor sees partitions no member holds and joins again.
#[test]
fn a_dead_members_partitions_are_taken_over() {
    let Some(brokers) = brokers("a_dead_members_partitions_are_taken_over") else { return };
    let scratch = Scratch::new("takeover");
    let events = scratch.path("events.jsonl");
    harness(&["generate", "--events", "1000", "--users", "40", "--output", &events]);
    let (first, second) = two_copying_runs_on_four_partitions(&brokers, &scratch);
    let killed_at = Instant::now();
    first.kill();
    harness(&["produce", "--brokers", &brokers, "--topic", &scratch.topic("in"), "--input", &events, "--quiet"]);
    let inputs = consume(&brokers, &scratch.topic("in"));
    let mut expected: Vec<_> = inputs.iter().map(key_value).collect();
    expected.sort();
    // Session timeout (6 s) + one check of the group (6 s) + joining again: 30 s is the bound tested.
    let mut got = Vec::new();
    while Instant::now() < killed_at + Duration::from_secs(30) && got != expected {
        std::thread::sleep(Duration::from_secs(2));
        got = consume(&brokers, &scratch.topic("rows")).iter().map(key_value).collect();
        got.sort();
        got.dedup();
    }
    let log = second.interrupt();
    assert_eq!(got.len(), expected.len(), "{log}");
    assert_eq!(got, expected);
}

/// A TCP proxy in front of a broker: its connections can be cut, and new ones refused meanwhile.
struct Proxy {
    port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(target_port: u16) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (refusing, open) = (cut.clone(), connections.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if refusing.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target_port)) else { continue };
                let mut open = open.lock().unwrap();
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    open.push(from.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, cut, connections }
    }

    /// Closes every connection and refuses new ones until `restore`.
    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A tansu of this test's own, reached through a proxy (it advertises the proxy's address), stopped when
/// dropped.
struct OwnBroker {
    child: Child,
    proxy: Proxy,
    tansu: String,
    port: u16,
}

impl OwnBroker {
    fn start(tansu: &str) -> OwnBroker {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let proxy = Proxy::start(port);
        let child = OwnBroker::listen(tansu, port, proxy.port);
        OwnBroker { child, proxy, tansu: tansu.to_string(), port }
    }

    /// A tansu on `port`, advertising `proxy_port`, once it accepts connections.
    fn listen(tansu: &str, port: u16, proxy_port: u16) -> Child {
        let mut child = Command::new(tansu)
            .args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{proxy_port}")])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(child.try_wait().unwrap().is_none(), "tansu exited");
            assert!(Instant::now() < deadline, "tansu did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    }

    /// Kills the broker and starts a new one on the same port: its memory storage starts empty, without
    /// the topics or the groups' commits.
    fn restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = OwnBroker::listen(&self.tansu, self.port, self.proxy.port);
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The copies of `expected` in the rows topic (sorted, each once), read until they are all there or
/// `within` has passed.
fn copies_within(
    brokers: &str,
    scratch: &Scratch,
    expected: &[(String, String)],
    within: Duration,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while Instant::now() < deadline && got != expected {
        // Read again at once if some are missing: a short wait for more is enough.
        got = consume_until_idle(brokers, &scratch.topic("rows"), "2s").iter().map(key_value).collect();
        got.sort();
        got.dedup();
    }
    got
}

/// The records of the input topic, sorted.
fn inputs_of(brokers: &str, scratch: &Scratch) -> Vec<(String, String)> {
    let mut inputs: Vec<_> = consume(brokers, &scratch.topic("in")).iter().map(key_value).collect();
    inputs.sort();
    inputs
}

/// `run` rides out a network cut longer than its session: it says the broker cannot be reached, keeps
/// going, says when it answers again, and copies every record, those sent before the cut and after it.
#[test]
fn a_run_rides_out_a_network_cut() {
    if brokers("a_run_rides_out_a_network_cut").is_none() {
        return;
    }
    let Ok(tansu) = std::env::var("TANSU_BIN") else {
        eprintln!("SKIPPED a_run_rides_out_a_network_cut: TANSU_BIN is not set (`make test` sets it)");
        return;
    };
    let broker = OwnBroker::start(&tansu);
    let brokers = broker.address();
    let scratch = Scratch::new("cut");
    let yaml = scratch.transform_yaml(&[]);
    let copy = scratch.path("copy.wat");
    std::fs::write(&copy, copy_wat()).unwrap();
    let (before, after) = (scratch.path("before.jsonl"), scratch.path("after.jsonl"));
    harness(&["generate", "--seed", "1", "--events", "300", "--users", "20", "--output", &before]);
    harness(&["generate", "--seed", "2", "--events", "300", "--users", "20", "--output", &after]);
    create_topics(&brokers, &scratch, 2);
    let running = Running::start_with(&brokers, &copy, &yaml, &["--give-up-after", "60s"]);
    running.wait_for_partitions();
    harness(&["produce", "--brokers", &brokers, "--topic", &scratch.topic("in"), "--input", &before, "--quiet"]);
    std::thread::sleep(Duration::from_secs(2));
    broker.proxy.cut();
    std::thread::sleep(Duration::from_secs(8));
    assert!(running.stderr().contains("the broker cannot be reached"), "{}", running.stderr());
    broker.proxy.restore();
    harness(&["produce", "--brokers", &brokers, "--topic", &scratch.topic("in"), "--input", &after, "--quiet"]);
    let expected = inputs_of(&brokers, &scratch);
    let got = copies_within(&brokers, &scratch, &expected, Duration::from_secs(40));
    let log = running.interrupt();
    assert_eq!(expected.len(), 600);
    assert_eq!(got, expected, "{log}");
    assert!(log.contains("the broker answers again"), "{log}");
}

/// `run` rides out a broker restart. tansu keeps everything in memory, so the topics and the group's
/// commits are gone, and the test creates the topics again a few seconds later, as a person would. `run`
/// says the broker cannot be reached and that it answers again, waits for its input topic, and copies
/// every record written after the restart, although the new logs end before the positions it had: it
/// says so, once a partition, and reads them from their start. A `consume` of the input topic rides the
/// restart out too and reads the new topic from its start.
#[test]
fn a_run_rides_out_a_broker_restart() {
    if brokers("a_run_rides_out_a_broker_restart").is_none() {
        return;
    }
    let Ok(tansu) = std::env::var("TANSU_BIN") else {
        eprintln!("SKIPPED a_run_rides_out_a_broker_restart: TANSU_BIN is not set (`make test` sets it)");
        return;
    };
    let mut broker = OwnBroker::start(&tansu);
    let brokers = broker.address();
    let scratch = Scratch::new("restart");
    let yaml = scratch.transform_yaml(&[]);
    let copy = scratch.path("copy.wat");
    std::fs::write(&copy, copy_wat()).unwrap();
    // Fewer records after the restart than before, on each partition: the new logs end before the old
    // positions.
    let (before, after) = (scratch.path("before.jsonl"), scratch.path("after.jsonl"));
    harness(&["generate", "--seed", "1", "--events", "400", "--users", "20", "--output", &before]);
    harness(&["generate", "--seed", "2", "--events", "100", "--users", "20", "--output", &after]);
    create_topics(&brokers, &scratch, 2);
    let mut running = Running::start_with(&brokers, &copy, &yaml, &["--give-up-after", "60s"]);
    running.wait_for_partitions();
    let consumed = scratch.path("consumed.jsonl");
    let mut consumer = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["consume", "--brokers", &brokers, "--topic", &scratch.topic("in"), "--from-beginning"])
        .args(["--idle-exit", "60s"]) // ends it should the test fail before it stops it
        .current_dir(root())
        .stdout(std::fs::File::create(&consumed).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    harness(&["produce", "--brokers", &brokers, "--topic", &scratch.topic("in"), "--input", &before, "--quiet"]);
    let first = inputs_of(&brokers, &scratch);
    assert_eq!(first.len(), 400);
    assert_eq!(copies_within(&brokers, &scratch, &first, Duration::from_secs(30)), first, "{}", running.stderr());
    broker.restart();
    std::thread::sleep(Duration::from_secs(4));
    create_topics(&brokers, &scratch, 2);
    harness(&["produce", "--brokers", &brokers, "--topic", &scratch.topic("in"), "--input", &after, "--quiet"]);
    let second = inputs_of(&brokers, &scratch);
    assert_eq!(second.len(), 100, "the input topic holds only what was written after the restart");
    let got = copies_within(&brokers, &scratch, &second, Duration::from_secs(40));
    assert!(running.child.try_wait().unwrap().is_none(), "run exited:\n{}", running.stderr());
    let log = running.interrupt();
    assert!(got == second, "{} of the {} records written after the restart copied:\n{log}", got.len(), second.len());
    assert!(log.contains("the broker cannot be reached"), "{log}");
    assert!(log.contains("the broker answers again"), "{log}");
    assert_eq!(log.matches("before our position").count(), 2, "{log}");

    Command::new("kill").args(["-INT", &consumer.id().to_string()]).status().unwrap();
    let status = consumer.wait().unwrap();
    let mut consume_log = String::new();
    std::io::Read::read_to_string(&mut consumer.stderr.take().unwrap(), &mut consume_log).unwrap();
    assert!(status.success(), "consume: {status}: {consume_log}");
    let values: Vec<String> = std::fs::read_to_string(&consumed).unwrap().lines().map(str::to_string).collect();
    let written: Vec<String> =
        first.iter().chain(&second).map(|(_, value)| serde_json::from_str(value).unwrap()).collect();
    let mut sorted = values.clone();
    sorted.sort();
    let mut expected = written.clone();
    expected.sort();
    assert!(
        sorted == expected,
        "consume read {} records of the {} written:\n{consume_log}",
        values.len(),
        written.len()
    );
}

/// `produce` rides out a network cut while it sends: it says once that the broker cannot be reached and
/// then that it answers again, exits 0, and the topic holds every record at least once. (librdkafka
/// retries a batch whose acknowledgement the cut lost, and the broker writes it again: idempotence, which
/// would drop that copy, is off, as with it librdkafka fails for good once a broker that forgot its
/// producer ids, as tansu does in a restart, answers.)
#[test]
fn produce_rides_out_a_network_cut() {
    if brokers("produce_rides_out_a_network_cut").is_none() {
        return;
    }
    let Ok(tansu) = std::env::var("TANSU_BIN") else {
        eprintln!("SKIPPED produce_rides_out_a_network_cut: TANSU_BIN is not set (`make test` sets it)");
        return;
    };
    let broker = OwnBroker::start(&tansu);
    let brokers = broker.address();
    let scratch = Scratch::new("producecut");
    let topic = scratch.topic("rows");
    let rows = aggregate_rows(&scratch, "rows.jsonl", 400);
    // 8 s of sending, cut from the 2nd second to the 8th.
    let producer = produce_rows_command(&brokers, &topic, &rows)
        .args(["--rate", "50", "--give-up-after", "60s"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    broker.proxy.cut();
    std::thread::sleep(Duration::from_secs(6));
    broker.proxy.restore();
    let out = producer.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("the broker cannot be reached").count(), 1, "{stderr}");
    assert!(stderr.contains("the broker answers again"), "{stderr}");
    let mut written: Vec<_> = consume(&brokers, &topic).iter().map(key_value).collect();
    written.sort();
    written.dedup();
    assert_eq!(written.len(), 400, "distinct records written");
}

/// `produce` gives up on a broker that stays away: once a record has waited `--give-up-after` for an
/// acknowledgement, it stops sending and exits with the reason, long before its input would end.
#[test]
fn produce_gives_up_on_a_broker_that_stays_away() {
    if brokers("produce_gives_up_on_a_broker_that_stays_away").is_none() {
        return;
    }
    let Ok(tansu) = std::env::var("TANSU_BIN") else {
        eprintln!("SKIPPED produce_gives_up_on_a_broker_that_stays_away: TANSU_BIN is not set (`make test` sets it)");
        return;
    };
    let broker = OwnBroker::start(&tansu);
    let scratch = Scratch::new("producegiveup");
    let rows = aggregate_rows(&scratch, "rows.jsonl", 2_000);
    // 20 s of input at this rate.
    let producer = produce_rows_command(&broker.address(), &scratch.topic("rows"), &rows)
        .args(["--rate", "100", "--give-up-after", "3s"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let cut_at = Instant::now();
    broker.proxy.cut();
    let out = producer.wait_with_output().unwrap();
    let took = cut_at.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(10), "{took:?}: {stderr}");
    assert!(stderr.contains("the broker cannot be reached"), "{stderr}");
    let reason = stderr.lines().last().unwrap_or_default();
    assert!(reason.contains("3 s (--give-up-after)") && reason.contains("Message timed out"), "{stderr}");
}
