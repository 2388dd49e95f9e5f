//! The module in a real Redpanda broker, in a container: the rows it writes there must be the rows the
//! harness predicts for the same input. Needs a Docker daemon; where there is none (as in CI here), the
//! test says so and skips. The image can be changed with `REDPANDA_IMAGE=name:tag`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::generate::{Generator, GeneratorConfig};
use harness::host::Limits;
use harness::pipeline::{PipelineConfig, RecordTime};
use integration_tests::replay::{clickstream_config, meta, replay};
use testcontainers::core::{ExecCommand, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, ImageExt};

const DEFAULT_IMAGE: &str = "docker.redpanda.com/redpandadata/redpanda:v24.3.7";

fn docker_available() -> Result<(), String> {
    match std::process::Command::new("docker").arg("info").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("`docker info` failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(error) => Err(format!("no docker command: {error}")),
    }
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

#[test]
fn the_broker_writes_the_rows_the_harness_predicts() {
    if let Err(why) = docker_available() {
        eprintln!("SKIPPED the_broker_writes_the_rows_the_harness_predicts: no Docker daemon here ({why})");
        return;
    }
    let wasm = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clickstream-aggregation.wasm");
    assert!(wasm.exists(), "{}: run `make build` first", wasm.display());
    let generator = GeneratorConfig {
        events: 3_000,
        users: 20,
        jitter_ms: 2_000,
        malformed_percent: 2.0,
        seed: 17,
        ..Default::default()
    };
    let values: Vec<Vec<u8>> = Generator::new(generator).collect();
    let events: Vec<u8> = values.iter().flat_map(|v| v.iter().copied().chain([b'\n'])).collect();

    // What the harness predicts: one partition, records produced now.
    let pipeline = PipelineConfig { record_time: RecordTime::Wall, ..clickstream_config() };
    let (predicted, result) = replay(values.clone(), &[], pipeline, Limits::default(), false);
    result.unwrap_or_else(|failure| panic!("{failure}"));
    let expected_rows: Vec<String> = predicted.rows().map(|row| row.value_text()).collect();
    let expected_dead_letters = predicted.dead_letters().count();

    let image = std::env::var("REDPANDA_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_string());
    let (name, tag) = image.rsplit_once(':').expect("REDPANDA_IMAGE is name:tag");
    let bootstrap = "data_transforms_enabled: true\n\
                     data_transforms_per_function_memory_limit: 5242880\n\
                     data_transforms_per_core_memory_reservation: 52428800\n";
    let container = GenericImage::new(name, tag)
        .with_wait_for(WaitFor::message_on_either_std("Successfully started Redpanda!"))
        .with_cmd(["redpanda", "start", "--mode=dev-container", "--smp=1", "--memory=1G"])
        .with_user("root:root")
        .with_copy_to("/etc/redpanda/.bootstrap.yaml", bootstrap.as_bytes().to_vec())
        .with_copy_to("/tmp/clickstream-aggregation.wasm", wasm)
        .with_copy_to("/tmp/clickstream.jsonl", events)
        .with_startup_timeout(Duration::from_secs(120))
        .start()
        .expect("the Redpanda container starts");

    must(&container, &["rpk", "topic", "create", "clickstream", "clickstream_aggregated", "clickstream_dlq"]);
    let mut deploy = vec![
        "rpk".to_string(),
        "transform".into(),
        "deploy".into(),
        "--file=/tmp/clickstream-aggregation.wasm".into(),
        "--name=clickstream-aggregation".into(),
        "--input-topic=clickstream".into(),
        "--output-topic=clickstream_aggregated".into(),
        "--output-topic=clickstream_dlq".into(),
    ];
    deploy.extend(meta(&[]).env.iter().map(|(key, value)| format!("--var={key}={value}")));
    must(&container, &deploy.iter().map(String::as_str).collect::<Vec<_>>());
    let started = Instant::now();
    while !must(&container, &["rpk", "transform", "list", "--detailed"]).contains("running") {
        assert!(started.elapsed() < Duration::from_secs(60), "the transform did not reach running");
        std::thread::sleep(Duration::from_millis(500));
    }
    must(&container, &["sh", "-c", "rpk topic produce clickstream -f '%v\\n' < /tmp/clickstream.jsonl"]);

    let consume = |topic: &str, count: usize| -> Vec<String> {
        let command = format!("timeout 120 rpk topic consume {topic} -n {count} -f '%v\\n'");
        must(&container, &["sh", "-c", &command]).lines().map(str::to_string).collect()
    };
    assert_eq!(consume("clickstream_aggregated", expected_rows.len()), expected_rows);
    assert_eq!(consume("clickstream_dlq", expected_dead_letters).len(), expected_dead_letters);
    let logs = must(&container, &["rpk", "transform", "logs", "clickstream-aggregation"]);
    assert!(logs.contains("clickstream-aggregation started"), "{logs}");
}
