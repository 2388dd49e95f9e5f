//! The `harness` command end to end, on the real module.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn module() -> PathBuf {
    let path = std::env::var_os("CLICKSTREAM_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("clickstream-aggregation.wasm"));
    assert!(path.exists(), "{}: run `make build` (or `make test`) first", path.display());
    path
}

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness")).args(args).current_dir(root()).output().expect("runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("harness-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `events` generated events in a new scratch folder `name`: the folder and the file.
fn generated(name: &str, events: u32) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let file = dir.join("events.jsonl");
    let out = harness(&["generate", "--events", &events.to_string(), "--output", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    (dir, file)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_captured_topic_replays_as_it_was() {
    let dir = scratch("rpk");
    let events = dir.join("events.jsonl");
    let out = harness(&[
        "generate",
        "--events",
        "3000",
        "--seed",
        "4",
        "--jitter",
        "2s",
        "--output",
        events.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The same events as `rpk topic consume` would print them from a 2-partition topic keyed by user_id.
    let mut captured = String::new();
    for (offset, line) in std::fs::read_to_string(&events).unwrap().lines().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = value["user_id"].as_str().unwrap();
        let time = clickstream_aggregation::time::parse_timestamp_ms(value["timestamp"].as_str().unwrap()).unwrap();
        let partition = (transform_host::producer::murmur2(key.as_bytes()) & 0x7fff_ffff) % 2;
        let record = serde_json::json!({
            "topic": "clickstream", "key": key, "value": line, "timestamp": time, "partition": partition, "offset": offset,
        });
        captured.push_str(&format!("{record}\n"));
    }
    let captured_path = dir.join("captured.jsonl");
    std::fs::write(&captured_path, captured).unwrap();

    let replay = |input: &Path, rows: &Path, extra: &[&str]| {
        let (module, input, rows_arg) = (module(), input.display().to_string(), rows.display().to_string());
        let mut args = vec!["replay", "--wasm", module.to_str().unwrap(), "--input", &input, "--output", &rows_arg];
        args.extend_from_slice(&["--close-windows", "--quiet"]);
        args.extend_from_slice(extra);
        let out = harness(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        (std::fs::read_to_string(rows).unwrap(), text(&out.stderr))
    };
    let (from_capture, summary) = replay(&captured_path, &dir.join("a.jsonl"), &[]);
    let (from_values, _) = replay(&events, &dir.join("b.jsonl"), &["--partitions", "2", "--record-time", "event"]);
    assert!(summary.contains("(partitions: 1, shards: 1)"), "{summary}");
    assert!(from_capture.lines().count() > 1_000);
    assert_eq!(from_capture, from_values);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn replay_writes_records_dead_letters_and_a_summary() {
    let dir = scratch("summary");
    let input = dir.join("in.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"timestamp":"2020-11-16 19:00:03","event":"view_item","user_id":"u1","site_id":"s","url":"/item/1"}"#,
            "\n",
            "not json\n",
            r#"{"timestamp":"2020-11-16 19:10:00"}"#,
            "\n",
        ),
    )
    .unwrap();
    let rows = dir.join("rows.jsonl");
    let dlq = dir.join("dlq.jsonl");
    let out = harness(&[
        "replay",
        "--wasm",
        module().to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        rows.to_str().unwrap(),
        "--dlq",
        dlq.to_str().unwrap(),
        "--format",
        "records",
        "--top",
        "3",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("replayed 3 records"), "{stderr}");
    assert!(stderr.contains("clickstream_aggregated: 30 records"), "{stderr}");
    assert!(stderr.contains("clickstream_dlq: 1 records (not_json=1)"), "{stderr}");
    assert!(
        stderr.contains("busiest groups in the last closed window [2020-11-16 19:00:00, 2020-11-16 19:05:00)"),
        "{stderr}"
    );
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&rows).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["key"], r#"["2020-11-16 18:55:10","u1","view_item","/item/1"]"#);
    assert_eq!(first["headers"][0]["key"], "window-incomplete");
    let dead: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&dlq).unwrap().trim()).unwrap();
    assert_eq!(dead["value"], "not json");
    assert_eq!(dead["headers"][0]["value"], "not_json");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_bad_configuration_stops_the_module_at_start_with_one_clear_message() {
    let out =
        harness(&["replay", "--wasm", module().to_str().unwrap(), "--input", "/dev/null", "--env", "WINDOW_SLIDE=7s"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Regression (start_up_exit_printed_backtraces): the reason came after two wasm backtraces of proc_exit.
    assert!(stderr.contains("the transform did not start"), "{stderr}");
    assert!(stderr.contains("the module exited with status 1 (proc_exit)"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert!(stderr.lines().count() <= 4, "{stderr}");
    assert!(
        stderr.contains("clickstream-aggregation cannot start: invalid configuration: WINDOW_SIZE=\"5m\": the window size must be a whole multiple of WINDOW_SLIDE (7s)"),
        "{stderr}"
    );
}

#[test]
fn a_trap_exits_non_zero_with_the_reason() {
    let out =
        harness(&["replay", "--wasm", module().to_str().unwrap(), "--input", "/dev/null", "--runtime-limit", "0ms"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("out of fuel"), "{stderr}");
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    for (args, expected) in [
        (vec!["generate", "--jitter", "2x"], "'2x' for '--jitter"),
        (vec!["generate", "--late-percent", "101"], "--late-percent 101"),
        (vec!["replay", "--wasm", "/nonexistent.wasm", "--input", "-"], "reading /nonexistent.wasm"),
        (
            vec!["replay", "--wasm", "clickstream-aggregation.wasm", "--input", "-", "--memory-limit", "2GB"],
            "'2GB' for '--memory-limit",
        ),
        (vec!["replay", "--wasm", "clickstream-aggregation.wasm", "--input", "-", "--env", "REDPANDA_X=1"], "reserved"),
        (
            vec!["replay", "--wasm", "clickstream-aggregation.wasm", "--input", "-", "--restart-at", "x"],
            "'x' for '--restart-at",
        ),
        (
            vec!["replay", "--wasm", "clickstream-aggregation.wasm", "--input", "-", "--from-offset", "7"],
            "bad prefix, expected @T (epoch milliseconds), +N or -N",
        ),
    ] {
        let out = harness(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn injected_restarts_are_reported_in_the_summary() {
    let (dir, events) = generated("restarts", 2_000);
    let out = harness(&[
        "replay",
        "--wasm",
        module().to_str().unwrap(),
        "--input",
        events.to_str().unwrap(),
        "--output",
        "/dev/null",
        "--restart-at",
        "500",
        "--restart-at",
        "0:1500",
        "--restart-every",
        "900",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("restarts 4,"), "two at offsets, two every 900 new records: {stderr}");
    assert!(
        stderr.contains(
            "harness: restart 1: injected trap on shard 0 at partition 0 offset 500; the VM restarts at once"
        ),
        "each restart gets a line: {stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Regression (a_closed_pipe_was_a_failure): `harness replay … | head -1` exited 2 with "Broken pipe". A
/// reader that has seen enough ends the run quietly, with status 0.
#[test]
fn a_reader_that_closes_the_pipe_ends_the_run_quietly() {
    use std::io::{BufRead, BufReader};
    let (_, events) = generated("pipe", 20_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["replay", "--wasm", module().to_str().unwrap(), "--input", events.to_str().unwrap()])
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("{\"window_start\""), "{first}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "status {:?}: {}", out.status, text(&out.stderr));
    assert!(!text(&out.stderr).contains("harness:"), "{}", text(&out.stderr));
}

/// Regression (huge_partition_counts_aborted): `--partitions 4294967295` or `--shards 4294967295` aborted
/// on a failed allocation, and an `rpk` record naming partition 100000000 took 14 GB. The broker's own
/// bounds (1,000 partitions per shard) refuse them, with exit 2.
#[test]
fn huge_partition_and_shard_counts_are_refused() {
    let wasm = module();
    let dir = std::env::temp_dir().join(format!("harness-cli-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let record = dir.join("far.jsonl");
    std::fs::write(&record, r#"{"topic":"t","value":"{}","timestamp":1,"partition":100000000,"offset":0}"#).unwrap();
    for (extra, expected) in [
        (
            vec!["--input", "-", "--partitions", "4294967295"],
            "--partitions 4294967295: at most 1000 partitions per shard",
        ),
        (vec!["--input", "-", "--shards", "4294967295"], "'4294967295' for '--shards"),
        (vec!["--input", record.to_str().unwrap()], "a record names partition 100000000"),
    ] {
        let out = harness(&[&["replay", "--wasm", wasm.to_str().unwrap()][..], &extra].concat());
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(expected), "{extra:?}: {}", text(&out.stderr));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Regression (restart_at_a_missing_partition_was_ignored): `--restart-at 99:5` with one partition was
/// silently never applied.
#[test]
fn a_restart_at_a_partition_that_does_not_exist_is_refused() {
    let (_, events) = generated("restart-at", 10);
    let wasm = module();
    let args = ["replay", "--wasm", wasm.to_str().unwrap(), "--input", events.to_str().unwrap(), "--partitions", "2"];
    let refused = harness(&[&args[..], &["--restart-at", "2:5"]].concat());
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("--restart-at \"2:5\": there is no partition 2 (--partitions 2)"));
    let accepted = harness(&[&args[..], &["--restart-at", "1:5", "--output", "/dev/null"]].concat());
    assert!(accepted.status.success(), "{}", text(&accepted.stderr));
}

/// `--move-at PARTITION:OFFSET` moves a partition's leadership once: a line tells where to and what becomes
/// of the VMs, and the summary counts it. A partition that does not exist, or none, is refused.
#[test]
fn a_move_is_reported_and_counted() {
    let (dir, events) = generated("move-at", 2_000);
    let wasm = module();
    let args = [
        "replay",
        "--wasm",
        wasm.to_str().unwrap(),
        "--input",
        events.to_str().unwrap(),
        "--output",
        "/dev/null",
        "--partitions",
        "3",
        "--shards",
        "2",
    ];
    let out = harness(&[&args[..], &["--move-at", "0:200"]].concat());
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "harness: partition 0 moves from shard 0 to shard 1 at offset 200: shard 0's VM goes on, keeping what it \
             counted of it; it reads again from offset"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("on the VM its partitions share"), "{stderr}");
    assert!(stderr.contains(", restarts 0, moves 1, records written again 0"), "{stderr}");
    for (bad, expected) in
        [("3:5", "--move-at \"3:5\": there is no partition 3 (--partitions 3)"), ("5", "expected PARTITION:OFFSET")]
    {
        let refused = harness(&[&args[..], &["--move-at", bad]].concat());
        assert_eq!(refused.status.code(), Some(2), "{bad}: {}", text(&refused.stderr));
        assert!(text(&refused.stderr).contains(expected), "{bad}: {}", text(&refused.stderr));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Replays `lines` (written to a file in a new scratch folder `name`) with `extra` flags, rows and dead
/// letters to files: the run, the rows and the dead letters.
fn replay_lines(name: &str, lines: &[String], extra: &[&str]) -> (Output, String, String) {
    let dir = scratch(name);
    let (input, rows, dlq) = (dir.join("in.jsonl"), dir.join("rows.jsonl"), dir.join("dlq.jsonl"));
    std::fs::write(&input, lines.join("\n")).unwrap();
    let wasm = module();
    let paths = [wasm.to_str().unwrap(), input.to_str().unwrap(), rows.to_str().unwrap(), dlq.to_str().unwrap()];
    let args = ["replay", "--wasm", paths[0], "--input", paths[1], "--output", paths[2], "--dlq", paths[3]];
    let out = harness(&[&args[..], extra].concat());
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let result = (out, read(&rows), read(&dlq));
    std::fs::remove_dir_all(dir).unwrap();
    result
}

/// Regression (record_time_close_windows_sent_nothing): with TIMESTAMP_FIELD=@record the harness knew no
/// event time, so `--close-windows` sent nothing and two events gave no row, with exit 0.
#[test]
fn close_windows_sends_empty_heartbeats_when_event_time_is_the_record_timestamp() {
    let events: Vec<String> =
        ["u1", "u2"].iter().map(|user| format!(r#"{{"user_id":"{user}","event":"e","url":"/"}}"#)).collect();
    let (out, rows, dead) =
        replay_lines("record-time", &events, &["--env", "TIMESTAMP_FIELD=@record", "--close-windows"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(rows.lines().count(), 60, "two groups in 30 windows each: {}", text(&out.stderr));
    assert_eq!(dead, "", "the heartbeats `{{}}` are read as heartbeats");
}

/// Regression (closing_heartbeat_in_the_events_form): under TIMESTAMP_FORMAT=epoch_ms, a last event with a
/// text time made the closing heartbeat text too; it was dead-lettered as wrong_type and no window closed.
#[test]
fn closing_heartbeats_take_the_form_the_transform_pins() {
    let events = [
        r#"{"created_at":1606780800000,"user_id":"u1","event":"e","url":"/"}"#.to_string(),
        r#"{"created_at":"2020-12-01 00:00:03","user_id":"u2","event":"e","url":"/"}"#.to_string(),
    ];
    let env = ["--env", "TIMESTAMP_FIELD=created_at", "--env", "TIMESTAMP_FORMAT=epoch_ms", "--close-windows"];
    let (out, rows, dead) = replay_lines("pinned-form", &events, &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(rows.lines().count(), 30, "u1's 30 windows: {}", text(&out.stderr));
    let dead: Vec<serde_json::Value> = dead.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0]["reason"].as_str(), dead[0]["key"].as_str()), (Some("wrong_type"), Some("u2")));
}

/// Windows the closing heartbeats leave open (here: heartbeats in another field than TIMESTAMP_FIELD, so
/// the transform dead-letters them) fail the run instead of ending it with fewer rows and status 0.
#[test]
fn windows_left_open_after_close_windows_fail_the_run() {
    let event =
        r#"{"timestamp":"2020-11-16 19:00:03","ts2":"2020-11-16 19:00:03","user_id":"u","event":"e","url":"/"}"#;
    let (out, rows, dead) =
        replay_lines("left-open", &[event.to_string()], &["--time-field", "ts2", "--close-windows"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("windows are still open after --close-windows"), "{stderr}");
    assert!(stderr.contains("open_panes=1"), "{stderr}");
    assert_eq!(rows, "");
    assert!(dead.contains("missing_field"), "{dead}");
}

/// Regression (dlq_without_transform_yaml_stayed_empty): without a transform.yaml the transform has the
/// one output topic `output`, so its dead letters were skipped and `--dlq` stayed empty, silently.
#[test]
fn a_dlq_that_no_output_topic_can_fill_is_refused() {
    let dir = scratch("no-yaml");
    let one_output = dir.join("one.yaml");
    std::fs::write(&one_output, "name: t\ninput-topic: in\noutput-topics:\n  - rows\n").unwrap();
    let dlq = dir.join("dlq.jsonl");
    let (wasm, dlq_arg) = (module(), dlq.to_str().unwrap());
    let args = ["replay", "--wasm", wasm.to_str().unwrap(), "--input", "/dev/null", "--dlq", dlq_arg];
    for (extra, expected) in [
        (vec![], "with no transform.yaml here (--transform-yaml names one), the transform has one output topic"),
        (vec!["--transform-yaml", one_output.to_str().unwrap()], "one.yaml names one output topic, \"rows\""),
    ] {
        let out =
            Command::new(env!("CARGO_BIN_EXE_harness")).args([&args[..], &extra].concat()).current_dir(&dir).output();
        let out = out.expect("runs");
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(expected), "{}", text(&out.stderr));
        assert!(!dlq.exists());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Regression (end_of_input_sealed_in_partition_order): the producer sent its open batches at the end
/// in partition order, so on a shared VM partition 0's newer events came before the older ones of
/// partitions 1 and 2 and made them late. Sent oldest first, the rows are those of a record-by-record run.
#[test]
fn the_open_batches_at_the_end_go_oldest_first() {
    let record = |partition: u32, user: &str, time: &str| {
        let value = format!(r#"{{"timestamp":"{time}","user_id":"{user}","event":"e","url":"/"}}"#);
        let timestamp = 1_605_553_200_000i64; // 2020-11-16 19:00:00, the record time of every record
        serde_json::json!({
            "topic": "clickstream", "key": user, "value": value, "timestamp": timestamp, "partition": partition,
            "offset": 0,
        })
        .to_string()
    };
    let records = [
        record(1, "a", "2020-11-16 19:00:00"),
        record(2, "b", "2020-11-16 19:01:00"),
        record(0, "c", "2020-11-16 19:20:00"),
    ];
    let run = |name: &str, linger: &str| {
        let flags = ["--partitions", "3", "--shards", "1", "--close-windows", "--linger", linger];
        let (out, rows, dead) = replay_lines(name, &records, &flags);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(!dead.contains("late"), "{dead}");
        rows
    };
    let batched = run("oldest-first", "5ms");
    assert_eq!(batched.lines().count(), 90, "three groups in 30 windows each");
    assert_eq!(batched, run("record-by-record", "0ms"));
}

/// Regression (closed_stderr_panicked): with stderr's reader gone, the first line on stderr panicked and
/// the run exited 101. It now ends as it would have: 0 for a run that went well, 1 for a failure.
#[test]
fn a_closed_stderr_leaves_the_exit_status_alone() {
    let (dir, events) = generated("stderr", 100);
    let wasm = module();
    let args = ["replay", "--wasm", wasm.to_str().unwrap(), "--input", events.to_str().unwrap()];
    for (extra, status) in [(vec![], 0), (vec!["--runtime-limit", "0ms"], 1)] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
            .args([&args[..], &extra].concat())
            .current_dir(root())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("runs");
        drop(child.stderr.take()); // before the module is even loaded
        assert_eq!(child.wait().unwrap().code(), Some(status), "{extra:?}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A request the stand-in got: its head and body.
type Request = (String, Vec<u8>);

/// A stand-in for Redpanda's admin API on a free port that, as a keep-alive server, never closes a
/// connection itself: it answers each request in turn with the next of `answers` (whole HTTP answers:
/// `answer`, `chunked`, `redirect`), one connection at a time, and returns the requests it got once the
/// client has closed the connection of the last answer.
fn admin_api(answers: Vec<String>) -> (String, std::thread::JoinHandle<Vec<Request>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut answers = answers.into_iter();
        let mut requests = Vec::new();
        while answers.len() > 0 {
            let mut reader = BufReader::new(listener.accept().unwrap().0);
            // Requests until the client closes the connection.
            loop {
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                if head.is_empty() {
                    break;
                }
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("Content-Length: "))
                    .map_or(0, |value| value.trim().parse().unwrap());
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let answer = answers.next().unwrap_or_else(|| panic!("no answer left for {head}"));
                reader.get_mut().write_all(answer.as_bytes()).unwrap();
                requests.push((head, body));
            }
        }
        requests
    });
    (address, server)
}

/// An answer whose body is framed by Content-Length.
fn answer(status: &str, body: &str) -> String {
    format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

/// A 200 answer in two chunks, as the broker streams its listings.
fn chunked(body: &str) -> String {
    let (first, second) = body.split_at(body.len() / 2);
    format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
        first.len(),
        second.len()
    )
}

/// The broker's answer where another broker leads the controller: 307 to the leader, and every other
/// time with `Retry-After: 1` (`admin_server::redirect_to_leader`).
fn redirect(location: &str, retry_after: bool) -> String {
    let retry_after = if retry_after { "Retry-After: 1\r\n" } else { "" };
    format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\n{retry_after}Content-Length: 0\r\n\r\n")
}

/// `GET /v1/partitions/kafka/clickstream`: the input topic with `count` partitions.
fn partitions(count: u32) -> String {
    let partitions: Vec<serde_json::Value> = (0..count)
        .map(|id| serde_json::json!({"ns": "kafka", "topic": "clickstream", "partition_id": id, "leader_id": 1}))
        .collect();
    answer("200 OK", &serde_json::Value::from(partitions).to_string())
}

/// `GET /v1/transform`: the transform with these (partition, status).
fn listing(statuses: &[(u32, &str)]) -> String {
    let status: Vec<serde_json::Value> = statuses
        .iter()
        .map(
            |(partition, status)| serde_json::json!({"partition": partition, "node_id": 1, "status": status, "lag": 0}),
        )
        .collect();
    serde_json::json!([{"name": "clickstream-aggregation", "input_topic": "clickstream", "status": status}]).to_string()
}

/// `harness deploy --admin ADMIN --wasm MODULE` with `extra`; it fails the test after 20 s (a client
/// that waits for the server to close hangs against a keep-alive server).
fn deploy(admin: &str, extra: &[&str]) -> Output {
    use std::time::{Duration, Instant};
    let wasm = module();
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["deploy", "--admin", admin, "--wasm", wasm.to_str().unwrap()])
        .args(extra)
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("deploy still runs after 20 s: {}", text(&child.wait_with_output().unwrap().stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `harness deploy` against a stand-in for Redpanda's admin API: it posts the JSON metadata immediately
/// followed by the module, reads the input topic's partitions, then polls `GET /v1/transform` until every
/// partition reports `running`; a refused deploy shows the broker's answer and exits 2.
/// Regression (deploy_hung_on_keep_alive): the answers were read until the server closed the connection.
#[test]
fn deploy_posts_metadata_then_the_module_and_waits_until_every_partition_runs() {
    let (admin, server) = admin_api(vec![
        answer("200 OK", ""),
        partitions(2),
        chunked(&listing(&[(0, "running"), (1, "inactive")])),
        answer("200 OK", &listing(&[(0, "running"), (1, "running")])),
    ]);
    let out = deploy(&admin, &["--env", "WINDOW_SIZE=1m", "--from-offset", "-5", "--compression", "zstd"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("running on 2 partitions"), "{}", text(&out.stderr));
    let requests = server.join().unwrap();
    assert!(requests[0].0.starts_with("POST /v1/transform/deploy HTTP/1.1"), "{}", requests[0].0);
    let body = &requests[0].1;
    let module_bytes = std::fs::read(module()).unwrap();
    assert!(body.ends_with(&module_bytes), "the module follows the metadata");
    let metadata: serde_json::Value = serde_json::from_slice(&body[..body.len() - module_bytes.len()]).unwrap();
    assert_eq!(metadata["name"], "clickstream-aggregation");
    assert_eq!(metadata["input_topic"], "clickstream");
    assert_eq!(metadata["output_topics"], serde_json::json!(["clickstream_aggregated", "clickstream_dlq"]));
    let env = metadata["environment"].as_array().unwrap();
    assert!(env.contains(&serde_json::json!({"key": "WINDOW_SIZE", "value": "1m"})), "{env:?}");
    assert_eq!(metadata["offset"], serde_json::json!({"format": "from_end", "value": 5}));
    assert_eq!(metadata["compression"], "zstd");
    assert!(requests[1].0.starts_with("GET /v1/partitions/kafka/clickstream HTTP/1.1"), "{}", requests[1].0);
    assert!(requests[2].0.starts_with("GET /v1/transform HTTP/1.1") && requests[3].0.starts_with("GET /v1/transform "));

    let refusal = r#"{"message":"invalid WebAssembly module","code":400}"#;
    let (admin, server) = admin_api(vec![answer("400 Bad Request", refusal)]);
    let out = deploy(&admin, &[]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the broker refused the deploy (HTTP 400)") && stderr.contains("invalid WebAssembly module")
    );
}

/// Regression (deploy_counted_only_listed_partitions): a listing of 2 running partitions of a 3-partition
/// topic was success. Every partition of the input topic must run; past `--wait`, those that do not are named.
#[test]
fn deploy_waits_for_every_partition_of_the_input_topic() {
    let two_of_three = listing(&[(0, "running"), (1, "running")]);
    let all = listing(&[(0, "running"), (1, "running"), (2, "running")]);
    let (admin, server) =
        admin_api(vec![answer("200 OK", ""), partitions(3), answer("200 OK", &two_of_three), answer("200 OK", &all)]);
    let out = deploy(&admin, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("running on 3 partitions"), "{}", text(&out.stderr));
    assert_eq!(server.join().unwrap().len(), 4, "listed until the third partition ran");

    let some_inactive = listing(&[(0, "running"), (1, "inactive")]);
    let (admin, server) = admin_api(vec![answer("200 OK", ""), partitions(3), answer("200 OK", &some_inactive)]);
    let out = deploy(&admin, &["--wait", "0ms"]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("1 of 3 partitions of clickstream run (partition 1: inactive, 2: not listed)"),
        "{}",
        text(&out.stderr)
    );
}

/// Regression (deploy_waited_out_errors): a partition reporting `errored` was waited on until `--wait`
/// ran out. It fails the deploy at once; the listing gives no reason, so the message says where to look.
#[test]
fn deploy_fails_at_once_when_a_partition_errors() {
    let errored = listing(&[(0, "running"), (1, "errored"), (2, "errored")]);
    let (admin, server) = admin_api(vec![answer("200 OK", ""), partitions(3), chunked(&errored)]);
    let out = deploy(&admin, &[]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("clickstream-aggregation errored on partitions 1, 2 of clickstream"), "{stderr}");
    assert!(stderr.contains("rpk transform logs clickstream-aggregation"), "{stderr}");
}

/// Regression (deploy_ignored_redirects): a broker that finds the controller leadership moved answers the
/// deploy with a 307 to the new leader; the 307 was taken for a refusal. The same request goes to the
/// Location, for at most 3 redirects, and waits as `Retry-After` says.
#[test]
fn deploy_follows_the_redirect_to_the_controller_leader() {
    let (leader, leader_server) = admin_api(vec![answer("200 OK", "")]);
    let (admin, server) = admin_api(vec![
        redirect(&format!("{leader}/v1/transform/deploy?redirect=1"), false),
        partitions(1),
        answer("200 OK", &listing(&[(0, "running")])),
    ]);
    let out = deploy(&admin, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (requests, at_leader) = (server.join().unwrap(), leader_server.join().unwrap());
    assert!(at_leader[0].0.starts_with("POST /v1/transform/deploy?redirect=1 HTTP/1.1"), "{}", at_leader[0].0);
    assert!(at_leader[0].0.contains(&format!("Host: {}", leader.trim_start_matches("http://"))), "{}", at_leader[0].0);
    assert_eq!(at_leader[0].1, requests[0].1, "the same body");

    let (admin, server) =
        admin_api((1..=4).map(|hop| redirect(&format!("/v1/transform/deploy?redirect={hop}"), hop % 2 == 0)).collect());
    let started = std::time::Instant::now();
    let out = deploy(&admin, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("redirected more than 3 times"), "{}", text(&out.stderr));
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "Retry-After: 1 was waited");
    assert_eq!(server.join().unwrap().len(), 4);
}

/// With no broker at the address, the live commands say so and exit 2 (no hang, no backtrace).
#[test]
fn live_commands_say_when_no_broker_answers() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let out = harness(&["produce", "--brokers", &closed, "--topic", "clickstream", "--events", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is a broker running there?"), "{}", text(&out.stderr));
}

/// The output compression comes from the transform.yaml's `compression:` (as rpk reads it), and
/// `--compression` wins over it; an unknown name is refused with the names allowed.
#[test]
fn output_batches_are_compressed_as_the_transform_yaml_or_the_flag_says() {
    let (dir, events) = generated("compression", 2_000);
    let yaml = |name: &str, compression: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("{}compression: {compression}\n", std::fs::read_to_string(root().join("transform.yaml")).unwrap()),
        )
        .unwrap();
        path
    };
    let largest_batch = |yaml: &Path, extra: &[&str]| -> (u64, u64) {
        let (wasm, input) = (module(), events.to_str().unwrap().to_string());
        let args =
            ["replay", "--wasm", wasm.to_str().unwrap(), "--input", &input, "--transform-yaml", yaml.to_str().unwrap()];
        let out = harness(&[&args[..], &["--output", "/dev/null", "--close-windows"], extra].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        let line = stderr.lines().find(|line| line.contains("bytes as stored")).unwrap_or_else(|| panic!("{stderr}"));
        let number_before = |marker: &str| -> u64 {
            line[..line.find(marker).unwrap()].trim_end().rsplit([' ', '(']).next().unwrap().parse().unwrap()
        };
        (number_before(" bytes as stored"), number_before(" uncompressed"))
    };
    let zstd = yaml("zstd.yaml", "zstd");
    let (stored, raw) = largest_batch(&zstd, &[]);
    assert!(stored * 5 < raw, "zstd: {stored} of {raw} bytes");
    let (stored, raw) = largest_batch(&zstd, &["--compression", "none"]);
    assert_eq!(stored, raw, "the flag wins");
    let bad = yaml("bad.yaml", "brotli");
    let out = harness(&[
        "replay",
        "--wasm",
        module().to_str().unwrap(),
        "--input",
        "/dev/null",
        "--transform-yaml",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("compression \"brotli\": expected none, gzip, snappy, lz4 or zstd"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `make dashboard`'s settings, read from the Makefile: the table shows the module's ranking of the last
/// closed window as written (rank 1 to 5, unique visitors not increasing), with the 95th percentile.
#[test]
fn the_dashboard_shows_the_pages_with_the_most_unique_visitors() {
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    let settings = makefile.split_once("DASHBOARD_SETTINGS := ").unwrap().1;
    let settings = &settings[..settings.find("dashboard:").unwrap()];
    let mut args = vec!["replay".to_string(), "--wasm".into(), module().to_str().unwrap().into()];
    for setting in settings.split("--env").skip(1) {
        let setting = setting.trim().trim_end_matches('\\').trim().trim_matches('\'');
        args.extend(["--env".to_string(), setting.to_string()]);
    }
    assert_eq!(args.len(), 3 + 2 * 4, "{args:?}");
    let (dir, file) = generated("dashboard", 6_000);
    let rows = dir.join("rows.jsonl");
    args.extend(
        ["--input", file.to_str().unwrap(), "--output", rows.to_str().unwrap(), "--quiet", "--top", "5"]
            .map(String::from),
    );
    let out = harness(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{args:?}: {}{}", text(&out.stderr), text(&out.stdout));
    // After the run's summary, on stderr (stdout may carry the rows).
    let stderr = text(&out.stderr);
    let table = &stderr[stderr.find("the last closed window's rows").unwrap_or_else(|| panic!("{stderr}"))..];
    let lines: Vec<Vec<&str>> = table.lines().map(|line| line.split_whitespace().collect()).collect();
    assert!(table.contains("as the module ranked them"), "{table}");
    assert_eq!(lines[1], ["url", "rank", "visitors", "p95_seconds", "views"], "{table}");
    assert_eq!(lines.len(), 2 + 5, "{table}");
    let visitors: Vec<u64> = lines[2..].iter().map(|line| line[2].parse().unwrap()).collect();
    assert!(visitors.windows(2).all(|pair| pair[0] >= pair[1]), "{table}");
    assert_eq!(lines[2..].iter().map(|line| line[1]).collect::<Vec<_>>(), ["1", "2", "3", "4", "5"]);
    assert!(lines[2..].iter().all(|line| line[3].parse::<f64>().is_ok_and(|p95| p95 > 0.0)), "{table}");
}
