//! The module in a real Redpanda broker, in a container, deployed with `harness deploy` through the admin
//! API: the rows it writes there must be the rows `harness replay` predicts for the same input, and a
//! redeploy with other settings must take effect. Needs a Docker daemon; where there is none (as in CI
//! here), each test says so and skips, and `make test-redpanda` (REQUIRE_DOCKER=1) fails instead. The image
//! can be changed with `REDPANDA_IMAGE=name:tag`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use testcontainers::core::{ExecCommand, IntoContainerPort, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, ImageExt};

const DEFAULT_IMAGE: &str = "docker.redpanda.com/redpandadata/redpanda:v24.3.7";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether the test can run; `make test-redpanda` sets REQUIRE_DOCKER, and there a missing daemon fails.
fn docker_available(test: &str) -> bool {
    let why = match Command::new("docker").arg("info").output() {
        Ok(out) if out.status.success() => return true,
        Ok(out) => format!("`docker info` failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
        Err(error) => format!("no docker command: {error}"),
    };
    assert!(std::env::var_os("REQUIRE_DOCKER").is_none(), "no Docker daemon: {why}");
    eprintln!("SKIPPED {test}: no Docker daemon here ({why})");
    false
}

/// The harness binary `cargo build -p harness` wrote (this package does not depend on the harness, so the
/// container stack's features stay out of its build); `HARNESS` names another.
fn harness_binary() -> PathBuf {
    let binary = std::env::var_os("HARNESS").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
        target.join("debug/harness")
    });
    assert!(binary.exists(), "{}: build it first (`cargo build -p harness`) or set HARNESS", binary.display());
    binary
}

fn harness(args: &[&str]) -> Output {
    let out = Command::new(harness_binary()).args(args).current_dir(root()).output().expect("runs");
    assert!(out.status.success(), "harness {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs a command in the container; returns its exit code and output.
fn run(container: &Container<GenericImage>, command: &[&str]) -> (i64, String, String) {
    let mut result = container.exec(ExecCommand::new(command.iter().copied())).expect("exec");
    let stdout = String::from_utf8_lossy(&result.stdout_to_vec().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&result.stderr_to_vec().unwrap()).into_owned();
    (result.exit_code().unwrap().unwrap_or(-1), stdout, stderr)
}

fn must(container: &Container<GenericImage>, command: &[&str]) -> String {
    let (code, stdout, stderr) = run(container, command);
    assert_eq!(code, 0, "{command:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// A Redpanda with transforms enabled, the three topics, and the admin API's address on this host.
fn redpanda(events: &[u8]) -> (Container<GenericImage>, String) {
    let image = std::env::var("REDPANDA_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_string());
    let (name, tag) = image.rsplit_once(':').expect("REDPANDA_IMAGE is name:tag");
    let bootstrap = std::fs::read(root().join("compose/bootstrap.yaml")).unwrap();
    let container = GenericImage::new(name, tag)
        .with_exposed_port(9644.tcp())
        .with_wait_for(WaitFor::message_on_either_std("Successfully started Redpanda!"))
        .with_cmd(["redpanda", "start", "--mode=dev-container", "--smp=1", "--memory=1G"])
        .with_user("root:root")
        .with_copy_to("/etc/redpanda/.bootstrap.yaml", bootstrap)
        .with_copy_to("/tmp/clickstream.jsonl", events.to_vec())
        .with_startup_timeout(Duration::from_secs(120))
        .start()
        .expect("the Redpanda container starts");
    must(&container, &["rpk", "topic", "create", "clickstream", "clickstream_aggregated", "clickstream_dlq"]);
    let port = container.get_host_port_ipv4(9644.tcp()).expect("the admin port is mapped");
    (container, format!("http://127.0.0.1:{port}"))
}

fn consume(container: &Container<GenericImage>, topic: &str, count: usize) -> Vec<String> {
    let command = format!("timeout 120 rpk topic consume {topic} -n {count} -f '%v\\n'");
    must(container, &["sh", "-c", &command]).lines().map(str::to_string).collect()
}

fn module() -> String {
    let wasm = root().join("clickstream-aggregation.wasm");
    assert!(wasm.exists(), "{}: run `make build` first", wasm.display());
    wasm.to_str().unwrap().to_string()
}

#[test]
fn the_broker_writes_the_rows_the_harness_predicts() {
    if !docker_available("the_broker_writes_the_rows_the_harness_predicts") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("harness-redpanda-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("clickstream.jsonl");
    let path = events.to_str().unwrap();
    harness(&[
        "generate",
        "--events",
        "3000",
        "--users",
        "20",
        "--jitter",
        "2s",
        "--malformed-percent",
        "2",
        "--seed",
        "17",
        "--output",
        path,
    ]);

    // What the harness predicts: one partition, records produced now.
    let (rows, dead) = (dir.join("rows"), dir.join("dead"));
    harness(&[
        "replay",
        "--wasm",
        &module(),
        "--input",
        path,
        "--record-time",
        "wall",
        "--output",
        rows.to_str().unwrap(),
        "--dlq",
        dead.to_str().unwrap(),
    ]);
    let expected_rows: Vec<String> = std::fs::read_to_string(&rows).unwrap().lines().map(str::to_string).collect();
    let expected_dead_letters = std::fs::read_to_string(&dead).unwrap().lines().count();

    let (container, admin) = redpanda(&std::fs::read(&events).unwrap());
    harness(&["deploy", "--admin", &admin, "--wasm", &module()]);
    must(&container, &["sh", "-c", "rpk topic produce clickstream -f '%v\\n' < /tmp/clickstream.jsonl"]);
    assert_eq!(consume(&container, "clickstream_aggregated", expected_rows.len()), expected_rows);
    assert_eq!(consume(&container, "clickstream_dlq", expected_dead_letters).len(), expected_dead_letters);
    let logs = must(&container, &["rpk", "transform", "logs", "clickstream-aggregation"]);
    assert!(logs.contains("clickstream-aggregation started"), "{logs}");
}

/// A redeploy with other settings (`--env`) takes effect: rows after it have the new window size.
#[test]
fn a_redeploy_with_new_settings_takes_effect() {
    if !docker_available("a_redeploy_with_new_settings_takes_effect") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("harness-redeploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("clickstream.jsonl");
    let path = events.to_str().unwrap();
    harness(&["generate", "--events", "2000", "--users", "10", "--output", path]);
    let (container, admin) = redpanda(&std::fs::read(&events).unwrap());
    let window_seconds = |row: &str| -> i64 {
        let row: serde_json::Value = serde_json::from_str(row).unwrap();
        let seconds = |field: &str| {
            let text = row[field].as_str().unwrap();
            let (h, rest) = text[11..].split_once(':').unwrap();
            let (m, s) = rest.split_once(':').unwrap();
            h.parse::<i64>().unwrap() * 3600 + m.parse::<i64>().unwrap() * 60 + s[..2].parse::<i64>().unwrap()
        };
        (seconds("window_end") - seconds("window_start")).rem_euclid(86_400)
    };
    harness(&["deploy", "--admin", &admin, "--wasm", &module()]);
    must(&container, &["sh", "-c", "rpk topic produce clickstream -f '%v\\n' < /tmp/clickstream.jsonl"]);
    let before = consume(&container, "clickstream_aggregated", 10);
    assert!(before.iter().all(|row| window_seconds(row) == 300), "{before:?}");
    harness(&["deploy", "--admin", &admin, "--wasm", &module(), "--env", "WINDOW_SIZE=1m", "--env", "WINDOW_SLIDE=1m"]);
    must(&container, &["sh", "-c", "rpk topic produce clickstream -f '%v\\n' < /tmp/clickstream.jsonl"]);
    let started = Instant::now();
    loop {
        let (_, stdout, _) =
            run(&container, &["sh", "-c", "timeout 10 rpk topic consume clickstream_aggregated -o -20 -f '%v\\n'"]);
        if stdout.lines().any(|row| window_seconds(row) == 60) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no 1-minute window after the redeploy");
    }
}
