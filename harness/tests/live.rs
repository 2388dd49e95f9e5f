//! The live pipeline against a real Kafka-protocol broker. `make test` starts one (tansu, on a free
//! loopback port) and names it in KAFKA_BROKERS; where that is not set, each test says so in one line
//! and passes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
        let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(["run", "--brokers", brokers, "--wasm", wasm, "--transform-yaml", yaml])
            .args(["--session-timeout", "6s", "--commit-interval", "1s"])
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

    /// Waits until the group gave this process partitions.
    fn wait_for_partitions(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let holds = |log: &str| {
            log.lines().any(|line| line.starts_with("harness: assigned partitions [") && !line.ends_with("[]"))
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
        "5s",
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
const COPY: &str = r#"(module
  (import "redpanda_transform" "check_abi_version_2" (func $check))
  (import "redpanda_transform" "read_batch_header" (func $read_batch_header (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "redpanda_transform" "read_next_record" (func $read_next_record (param i32 i32 i32 i32 i32) (result i32)))
  (import "redpanda_transform" "write_record" (func $write_record (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (local $count i32) (local $i i32)
    (call $check)
    (loop $batches
      (drop (call $read_batch_header (i32.const 0) (i32.const 8) (i32.const 12) (i32.const 16) (i32.const 20)
                                     (i32.const 24) (i32.const 32) (i32.const 40) (i32.const 48) (i32.const 52)))
      (local.set $count (i32.load (i32.const 8)))
      (local.set $i (i32.const 0))
      (block $done (loop $records
        (br_if $done (i32.ge_s (local.get $i) (local.get $count)))
        (drop (call $write_record (i32.const 4096)
          (call $read_next_record (i32.const 64) (i32.const 72) (i32.const 80) (i32.const 4096) (i32.const 60000))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $records)))
      (br $batches))))"#;

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
    assert!(log.contains("offsets committed"), "{log}");

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
    std::fs::write(&copy, COPY).unwrap();
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

/// Two `harness run` processes in one group share the partitions, and between them copy every record.
#[test]
fn two_runs_in_one_group_share_the_partitions() {
    let Some(brokers) = brokers("two_runs_in_one_group_share_the_partitions") else { return };
    let scratch = Scratch::new("shared");
    let yaml = scratch.transform_yaml(&[]);
    let copy = scratch.path("copy.wat");
    std::fs::write(&copy, COPY).unwrap();
    let events = scratch.path("events.jsonl");
    harness(&["generate", "--events", "2000", "--users", "40", "--output", &events]);
    create_topics(&brokers, &scratch, 4);
    let first = Running::start(&brokers, &copy, &yaml);
    first.wait_for_partitions();
    let second = Running::start(&brokers, &copy, &yaml);
    second.wait_for_partitions();
    // The first gave some partitions up to the second.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !first.stderr().contains("revoked partitions") {
        assert!(Instant::now() < deadline, "no rebalance:\n{}", first.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
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
