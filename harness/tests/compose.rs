//! `docker-compose.yml`, the seed's local stack: what the README promises of it, read from the file;
//! and `docker compose config` where a Compose client exists.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml(path: &str) -> serde_yaml::Value {
    let text = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn command(service: &serde_yaml::Value) -> String {
    let parts = service["command"].as_sequence().expect("a command list");
    parts.iter().map(|part| part.as_str().unwrap()).collect::<Vec<_>>().join(" ")
}

#[test]
fn the_compose_stack_is_the_seeds_pipeline() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    // A Redpanda with SDK 1.1 support (24.2 or newer), transforms enabled before its first boot.
    let image = services["redpanda"]["image"].as_str().unwrap();
    let version = image.rsplit_once(":v").expect("a v-tagged image").1;
    let (major, minor) = version.split_once('.').unwrap();
    let minor: u32 = minor.split('.').next().unwrap().parse().unwrap();
    assert!((major.parse::<u32>().unwrap(), minor) >= (24, 2), "{image}");
    let volumes = services["redpanda"]["volumes"].as_sequence().unwrap();
    assert!(volumes.iter().any(|v| v.as_str().unwrap().ends_with(":/etc/redpanda/.bootstrap.yaml:ro")));
    let bootstrap = yaml("compose/bootstrap.yaml");
    assert_eq!(bootstrap["data_transforms_enabled"], serde_yaml::Value::Bool(true));
    // The memory limit the README recommends.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let limit = bootstrap["data_transforms_per_function_memory_limit"].as_u64().unwrap();
    assert!(
        readme.contains(&format!("data_transforms_per_function_memory_limit {limit}")),
        "README recommends {limit}"
    );
    // The three topics of transform.yaml, and the transform deployed.
    let transform = yaml("transform.yaml");
    let setup = command(&services["setup"]);
    assert!(setup.contains(&format!("rpk topic create {}", transform["input-topic"].as_str().unwrap())), "{setup}");
    for output in transform["output-topics"].as_sequence().unwrap() {
        assert!(setup.contains(output.as_str().unwrap()), "{setup}");
    }
    assert!(setup.contains("rpk transform deploy"), "{setup}");
    // The seed's producer, writing to the input topic.
    let producer = command(&services["producer"]);
    assert!(producer.starts_with("harness produce"), "{producer}");
    assert!(producer.contains(&format!("--topic={}", transform["input-topic"].as_str().unwrap())), "{producer}");
}

#[test]
fn docker_compose_config_accepts_the_file() {
    let client = std::process::Command::new("docker").args(["compose", "version"]).output();
    if !client.as_ref().is_ok_and(|out| out.status.success()) {
        eprintln!("SKIPPED docker_compose_config_accepts_the_file: no Docker Compose client here");
        return;
    }
    let out = std::process::Command::new("docker")
        .args(["compose", "config", "--quiet"])
        .current_dir(root())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
