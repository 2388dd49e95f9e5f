//! `docker-compose.yml`, the seed's local stack: what the README promises of it, read from the file, with the
//! `Dockerfile` that builds its producer and the `.dockerignore` of that build; and `docker compose config`
//! where a Compose client exists. No test here starts the stack.

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
    let why = match std::process::Command::new("docker").args(["compose", "version"]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`docker compose version` failed: {}",
            String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("")
        )),
        Err(error) => Some(format!("no docker command: {error}")),
    };
    if let Some(why) = why {
        eprintln!("SKIPPED docker_compose_config_accepts_the_file: no Docker Compose client here ({why})");
        return;
    }
    let out = std::process::Command::new("docker")
        .args(["compose", "config", "--format", "json"])
        .current_dir(root())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // As Compose resolves it: the producer built from the workspace, nothing of the host mounted.
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let producer = &config["services"]["producer"];
    let context = producer["build"]["context"].as_str().unwrap_or_else(|| panic!("not built: {producer}"));
    assert_eq!(Path::new(context).canonicalize().unwrap(), root().canonicalize().unwrap());
    assert!(producer["volumes"].is_null(), "{producer}");
}

/// The producer's `build:` section: the Dockerfile's path relative to the workspace, and its text.
fn producer_dockerfile() -> (String, String) {
    let compose = yaml("docker-compose.yml");
    let producer = &compose["services"]["producer"];
    let build = &producer["build"];
    let (context, dockerfile) = match build {
        serde_yaml::Value::String(context) => (context.as_str(), "Dockerfile"),
        serde_yaml::Value::Mapping(_) => {
            (build["context"].as_str().unwrap_or("."), build["dockerfile"].as_str().unwrap_or("Dockerfile"))
        }
        _ => panic!("the producer is not built (no `build:`): {producer:?}"),
    };
    // The Dockerfile copies the workspace manifests, so the context is the workspace.
    assert!(matches!(context, "." | "./"), "build context {context}");
    let text = std::fs::read_to_string(root().join(dockerfile)).unwrap_or_else(|e| panic!("{dockerfile}: {e}"));
    (dockerfile.to_string(), text)
}

struct Stage {
    image: String,
    name: Option<String>,
    /// (INSTRUCTION, arguments), continuation lines joined.
    instructions: Vec<(String, String)>,
}

impl Stage {
    /// The arguments of each instruction of these kinds, in order.
    fn args<'a>(&'a self, keywords: &'a [&str]) -> impl Iterator<Item = &'a str> {
        self.instructions
            .iter()
            .filter(|(keyword, _)| keywords.contains(&keyword.as_str()))
            .map(|(_, args)| args.as_str())
    }
}

fn stages(dockerfile: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    let mut line = String::new();
    for raw in dockerfile.lines().map(str::trim) {
        // Comments (parser directives too) may sit between continuation lines; Docker drops them.
        if raw.starts_with('#') {
            continue;
        }
        if let Some(head) = raw.strip_suffix('\\') {
            line.push_str(head);
            line.push(' ');
            continue;
        }
        line.push_str(raw);
        let joined = std::mem::take(&mut line);
        let Some((keyword, args)) = joined.trim().split_once(char::is_whitespace) else { continue };
        let (keyword, args) = (keyword.to_ascii_uppercase(), args.trim().to_string());
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            let name = match words[..] {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                [_] => None,
                _ => panic!("FROM {args}"),
            };
            stages.push(Stage { image: words[0].to_string(), name, instructions: Vec::new() });
        } else {
            stages.last_mut().expect("FROM first").instructions.push((keyword, args));
        }
    }
    stages
}

/// A COPY's flags (`--from=build`) and paths, the destination last.
fn copy_parts(args: &str) -> (Vec<&str>, Vec<&str>) {
    args.split_whitespace().partition(|word| word.starts_with("--"))
}

#[test]
fn the_producer_is_built_from_the_dockerfile_not_a_host_binary() {
    // A `build:` of the workspace, with the Dockerfile it names.
    producer_dockerfile();
    // A host binary mounted in would be of the wrong kind on macOS, or of the wrong C library on Linux.
    let compose = yaml("docker-compose.yml");
    let producer = &compose["services"]["producer"];
    assert!(producer["volumes"].is_null(), "the producer mounts {:?}", producer["volumes"]);
}

#[test]
fn the_dockerfile_builds_the_harness_locked_and_ships_only_the_binary() {
    let (dockerfile, text) = producer_dockerfile();
    let stages = stages(&text);
    assert!(stages.len() >= 2, "{dockerfile}: a build stage and a runtime stage");
    let (runtime, builders) = stages.split_last().unwrap();

    // The build: `cargo build --release -p harness --locked`, with the workspace's Rust.
    let (build, run) = builders
        .iter()
        .find_map(|stage| Some((stage, stage.args(&["RUN"]).find(|run| run.contains("cargo build"))?)))
        .unwrap_or_else(|| panic!("{dockerfile}: no stage runs `cargo build`"));
    let words: Vec<&str> = run.split_whitespace().collect();
    assert!(words.contains(&"--release") && words.contains(&"--locked"), "{run}");
    assert!(words.windows(2).any(|pair| matches!(pair, ["-p" | "--package", "harness"])), "{run}");
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let rust_version = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version"))
        .map(|value| value.trim_start_matches([' ', '=']).trim().trim_matches('"'))
        .expect("the workspace's rust-version");
    let (image, tag) = build.image.split_once(':').expect("a tagged Rust image");
    assert_eq!(image, "rust", "{}", build.image);
    let version = tag.split('-').next().unwrap();
    assert!(
        version == rust_version || version.starts_with(&format!("{rust_version}.")),
        "{} vs {rust_version}",
        build.image
    );
    // The binary links the builder's C library: the runtime runs the same Debian release.
    let release = tag.rsplit('-').next().unwrap();
    assert!(runtime.image.starts_with(&format!("debian:{release}")), "{} built on {release}", runtime.image);

    // The runtime stage gets the binary and nothing else: no sources, no toolchain. The binary is cargo's
    // output, or where the build copies it (out of a cache-mounted target dir).
    let copied = words.windows(3).find_map(|cp| match cp {
        ["cp", from, to] if from.ends_with("release/harness") => Some(*to),
        _ => None,
    });
    let builder = build.name.as_deref().expect("a named build stage");
    let copies: Vec<&str> = runtime.args(&["COPY", "ADD"]).collect();
    assert!(!copies.is_empty(), "{dockerfile}: the runtime stage copies nothing");
    for args in copies {
        let (flags, paths) = copy_parts(args);
        assert_eq!(flags, [format!("--from={builder}")], "COPY {args}");
        let binary = |source: &str| Some(source) == copied || source.ends_with("target/release/harness");
        assert!(matches!(paths[..], [source, _] if binary(source)), "COPY {args}: only the binary");
    }
}

/// Whether `pattern` (`.dockerignore`: `*` within a name, `**` for any number of names) covers `path` or a
/// directory above it.
fn covers(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.split_first(), path.split_first()) {
        (None, _) => true,
        (Some((&"**", rest)), _) => (0..=path.len()).any(|skip| covers(rest, &path[skip..])),
        (Some((glob, rest)), Some((name, tail))) => wildcard(glob, name) && covers(rest, tail),
        (Some(_), None) => false,
    }
}

fn wildcard(glob: &str, name: &str) -> bool {
    match glob.split_once('*') {
        None => glob == name,
        Some((head, tail)) => name
            .strip_prefix(head)
            .is_some_and(|rest| (0..=rest.len()).any(|i| rest.is_char_boundary(i) && wildcard(tail, &rest[i..]))),
    }
}

/// Whether the build context leaves `path` out: the last pattern that covers it decides.
fn ignored(patterns: &[String], path: &str) -> bool {
    let path: Vec<&str> = path.trim_matches('/').split('/').collect();
    patterns.iter().fold(false, |ignored, pattern| {
        let (negated, pattern) = pattern.strip_prefix('!').map_or((false, pattern.as_str()), |p| (true, p));
        let globs: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        if covers(&globs, &path) {
            !negated
        } else {
            ignored
        }
    })
}

#[test]
fn the_build_context_leaves_out_the_target_dir_and_keeps_what_the_dockerfile_copies() {
    let text = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    let patterns: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(String::from)
        .collect();
    // The shared target dir holds gigabytes; demo output and history are not sources either.
    for path in ["target", "target/debug/harness", "demo-out", ".git"] {
        assert!(ignored(&patterns, path), "the build context includes {path}");
    }
    let (dockerfile, text) = producer_dockerfile();
    for stage in stages(&text) {
        for args in stage.args(&["COPY", "ADD"]) {
            let (flags, paths) = copy_parts(args);
            if flags.iter().any(|flag| flag.starts_with("--from=")) {
                continue;
            }
            for source in &paths[..paths.len() - 1] {
                assert!(root().join(source).exists(), "{dockerfile}: COPY {source}: no such path");
                assert!(!ignored(&patterns, source), "{dockerfile}: COPY {source}, which .dockerignore leaves out");
            }
        }
    }
}

/// Makefile variables (`NAME := value`) substituted into `text`.
fn expand(makefile: &str, text: &str) -> String {
    makefile
        .lines()
        .filter_map(|line| line.split_once(":=").or_else(|| line.split_once("?=")))
        .fold(text.to_string(), |text, (name, value)| text.replace(&format!("$({})", name.trim()), value.trim()))
}

/// A Makefile target's prerequisites and recipe lines.
fn target<'a>(makefile: &'a str, name: &str) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut lines = makefile.lines().skip_while(|line| !line.starts_with(&format!("{name}:")));
    let prerequisites =
        lines.next().unwrap_or_else(|| panic!("no make target {name}"))[name.len() + 1..].split_whitespace().collect();
    (prerequisites, lines.take_while(|line| line.starts_with('\t')).map(str::trim).collect())
}

#[test]
fn every_mounted_path_is_in_the_repo_or_made_by_make_build() {
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    // What `make build` copies into the workspace, and `make up` builds first.
    let (_, recipe) = target(&makefile, "build");
    let built: Vec<String> = recipe
        .iter()
        .filter_map(|line| line.strip_prefix("cp "))
        .map(|args| expand(&makefile, args.split_whitespace().last().unwrap()))
        .collect();
    let (up, _) = target(&makefile, "up");
    let compose = yaml("docker-compose.yml");
    for (service, definition) in compose["services"].as_mapping().unwrap() {
        for volume in definition["volumes"].as_sequence().into_iter().flatten() {
            let source = match volume {
                serde_yaml::Value::String(short) => short.split(':').next().unwrap(),
                long => long["source"].as_str().unwrap_or_default(),
            };
            let Some(path) = source.strip_prefix("./") else {
                assert!(!source.contains('/'), "{service:?} mounts {source}: not a path in the workspace");
                continue; // a named volume
            };
            if built.iter().any(|made| made == path) {
                assert!(up.contains(&"build"), "{service:?} mounts {path}, which `make up` does not build");
                continue;
            }
            let tracked = std::process::Command::new("git")
                .args(["ls-files", "--error-unmatch", "--", path])
                .current_dir(root())
                .output()
                .expect("git");
            assert!(
                tracked.status.success(),
                "{service:?} mounts {path}: neither in the repo nor made by `make build`"
            );
        }
    }
}

#[test]
fn the_build_stage_copies_every_workspace_member() {
    // cargo loads every member of the workspace, even to build one package.
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let members = manifest.split_once("members = [").expect("a members list").1.split_once(']').unwrap().0;
    let (dockerfile, text) = producer_dockerfile();
    let stages = stages(&text);
    let copied: Vec<&str> = stages
        .iter()
        .flat_map(|stage| stage.args(&["COPY"]).collect::<Vec<_>>())
        .flat_map(|args| {
            let (_, paths) = copy_parts(args);
            paths[..paths.len() - 1].to_vec()
        })
        .collect();
    for member in members.split(',').map(|member| member.trim().trim_matches('"')).filter(|m| !m.is_empty()) {
        assert!(copied.contains(&member), "{dockerfile} does not copy the workspace member {member}");
    }
}
