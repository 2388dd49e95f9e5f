//! The README's examples, run as written: the input, the settings of the command and the output are read
//! from the README's marked blocks, so the README cannot drift from what the module does.

use integration_tests::readme::{block, README};
use integration_tests::replay::{clickstream_config, replay};
use transform_host::Limits;

#[test]
fn the_orders_example_gives_the_rows_the_readme_shows() {
    let command = block("orders command").join(" ");
    let settings = settings_of(&command);
    assert_eq!(settings.len(), 6, "{command}");
    assert!(command.contains("--close-windows") && command.contains("--key-field none"));
    let input: Vec<Vec<u8>> = block("orders input").iter().map(|line| line.as_bytes().to_vec()).collect();
    let mut pipeline = clickstream_config();
    (pipeline.producer.key_field, pipeline.producer.time_field) = (None, "created_at".into());
    let (collected, result) = replay(input, &settings, pipeline, Limits::default(), true);
    result.unwrap_or_else(|failure| panic!("{failure}"));
    let rows: Vec<String> = collected.rows().map(|row| row.value_text()).collect();
    assert_eq!(rows, block("orders output"));
    assert_eq!(collected.dead_letters().count(), 0);
}

/// Every variable the module reads is in the README's configuration table with the module's default, and
/// in transform.yaml with that default (a variable without a default is set there by name, or shown in a
/// comment when setting it turns something on).
#[test]
fn the_configuration_table_and_transform_yaml_list_every_variable_with_its_default() {
    let yaml = include_str!("../../transform.yaml");
    for (variable, default) in clickstream_aggregation::config::VARIABLES {
        let row = README
            .lines()
            .find(|line| line.starts_with(&format!("| `{variable}` |")))
            .unwrap_or_else(|| panic!("the README's configuration table has no row for {variable}"));
        let in_yaml = yaml
            .lines()
            .find_map(|line| {
                let line = line.trim();
                let line = if default.is_none() { line.trim_start_matches("# ") } else { line };
                line.strip_prefix(&format!("{variable}: "))
            })
            .unwrap_or_else(|| panic!("transform.yaml does not set {variable}"));
        if let Some(default) = default {
            assert!(row.starts_with(&format!("| `{variable}` | `{default}` |")), "{row}");
            assert_eq!(in_yaml, format!("\"{default}\""), "{variable} in transform.yaml");
        }
    }
}

/// The project's transform.yaml is the clickstream transform's, read as the harness and rpk read it.
#[test]
fn the_project_transform_yaml_reads_as_the_clickstream_transform() {
    let meta = transform_host::meta::read_transform_yaml(include_str!("../../transform.yaml")).unwrap();
    assert_eq!(meta.name, "clickstream-aggregation");
    assert_eq!(meta.input_topic, "clickstream");
    assert_eq!(meta.output_topics, ["clickstream_aggregated", "clickstream_dlq"]);
    assert!(meta.env.contains(&("WINDOW_SIZE".to_string(), "5m".to_string())));
    transform_host::meta::validate(&meta).unwrap();
}

/// The README's Layout section names every source file of the workspace (by its path from its crate's
/// folder, e.g. `src/commands/live/run.rs` or `tests/live.rs`), so a newcomer finds each file where it says.
#[test]
fn the_layout_section_names_every_source_file() {
    let start = README.find("\n## Layout\n").expect("README has a Layout section");
    let rest = &README[start + 1..];
    let layout = &rest[..rest[3..].find("\n## ").map_or(rest.len(), |end| end + 3)];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut missing = Vec::new();
    for krate in ["transform", "host", "harness", "tests", "container-tests", "fuzz"] {
        let mut folders = vec![root.join(krate)];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).unwrap().map(Result::unwrap) {
                let path = entry.path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_dir() && !["target", "corpus", "artifacts"].contains(&name.as_str()) {
                    folders.push(path);
                } else if name.ends_with(".rs") {
                    let relative = path.strip_prefix(root.join(krate)).unwrap().to_string_lossy().replace('\\', "/");
                    if !layout.contains(&format!("`{relative}`")) {
                        missing.push(format!("{krate}/{relative}"));
                    }
                }
            }
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "the README's Layout section does not name: {missing:?}");
}

/// The `--env KEY=VALUE` settings of a README command block.
fn settings_of(command: &str) -> Vec<(&str, &str)> {
    command
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|pair| pair[0] == "--env")
        .map(|pair| pair[1].trim_matches('\'').split_once('=').expect("--env KEY=VALUE"))
        .collect()
}

#[test]
fn the_top_n_example_gives_the_rows_the_readme_shows() {
    let command = block("top-n command").join(" ");
    let settings = settings_of(&command);
    assert_eq!(settings.len(), 6, "{command}");
    assert!(command.contains("--close-windows"));
    let input: Vec<Vec<u8>> = block("top-n input").iter().map(|line| line.as_bytes().to_vec()).collect();
    let (collected, result) = replay(input, &settings, clickstream_config(), Limits::default(), true);
    result.unwrap_or_else(|failure| panic!("{failure}"));
    let rows: Vec<String> = collected.rows().map(|row| row.value_text()).collect();
    assert_eq!(rows, block("top-n output"));
}

#[test]
fn the_window_kind_examples_give_the_rows_the_readme_shows() {
    let input: Vec<Vec<u8>> = block("windows input").iter().map(|line| line.as_bytes().to_vec()).collect();
    for kind in ["tumble", "cumulate", "session"] {
        let command = block(&format!("{kind} command")).join(" ");
        let settings = settings_of(&command);
        assert_eq!(settings[0], ("WINDOW", kind), "{command}");
        assert!(command.contains("--close-windows"));
        let (collected, result) = replay(input.clone(), &settings, clickstream_config(), Limits::default(), true);
        result.unwrap_or_else(|failure| panic!("{kind}: {failure}"));
        let rows: Vec<String> = collected.rows().map(|row| row.value_text()).collect();
        assert_eq!(rows, block(&format!("{kind} output")), "{kind}");
    }
}
