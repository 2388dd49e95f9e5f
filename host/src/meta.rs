//! The transform's identity and environment: `transform.yaml` merged with `--env KEY=VALUE` overrides,
//! checked with the broker's deploy rules (`plugin_frontend.cc validate_mutation`).

use anyhow::{bail, ensure, Context};
use serde_yaml::Value;

use crate::record_batch::Compression;

/// Which transform this VM is: its name (argv[0]), topics and user environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformMeta {
    pub name: String,
    pub input_topic: String,
    pub output_topics: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl TransformMeta {
    /// The environment the broker gives the VM: the user's variables and the input and output topics (the
    /// VM sees them in an order of their own, as the broker's hash map gives them: `wasi.rs`).
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.push(("REDPANDA_INPUT_TOPIC".into(), self.input_topic.clone()));
        env.extend(
            self.output_topics
                .iter()
                .enumerate()
                .map(|(i, topic)| (format!("REDPANDA_OUTPUT_TOPIC_{i}"), topic.clone())),
        );
        env
    }
}

/// Reads `name`, `input-topic`, `output-topics` (or the legacy `output-topic`) and `env` of a transform.yaml.
pub fn read_transform_yaml(text: &str) -> anyhow::Result<TransformMeta> {
    let yaml: Value = serde_yaml::from_str(text).context("transform.yaml is not YAML")?;
    let text_field = |name: &str| yaml.get(name).and_then(Value::as_str).map(str::to_string);
    let output_topics = match (yaml.get("output-topics"), text_field("output-topic")) {
        (Some(Value::Sequence(topics)), _) => topics
            .iter()
            .map(|topic| topic.as_str().map(str::to_string).context("output-topics must be a list of names"))
            .collect::<anyhow::Result<Vec<_>>>()?,
        (Some(_), _) => bail!("output-topics must be a list of names"),
        (None, Some(topic)) => vec![topic],
        (None, None) => bail!("transform.yaml names no output-topics"),
    };
    let env = match yaml.get("env") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Mapping(map)) => map
            .iter()
            .map(|(key, value)| {
                let key = key.as_str().context("env keys must be strings")?;
                let value = match value {
                    Value::String(text) => text.clone(),
                    Value::Number(number) => number.to_string(),
                    Value::Bool(flag) => flag.to_string(),
                    _ => bail!("env value of {key} must be a string"),
                };
                Ok((key.to_string(), value))
            })
            .collect::<anyhow::Result<_>>()?,
        Some(_) => bail!("env must be a map of names to values"),
    };
    Ok(TransformMeta {
        name: text_field("name").context("transform.yaml has no name")?,
        input_topic: text_field("input-topic").context("transform.yaml has no input-topic")?,
        output_topics,
        env,
    })
}

/// The output compression a transform.yaml asks for (`compression:`, as `rpk transform deploy` reads it).
pub fn read_compression(text: &str) -> anyhow::Result<Option<Compression>> {
    let yaml: Value = serde_yaml::from_str(text).context("transform.yaml is not YAML")?;
    let Some(value) = yaml.get("compression") else { return Ok(None) };
    let name = value.as_str().context("compression must be a name")?;
    let compression = <Compression as clap::ValueEnum>::from_str(name, false)
        .map_err(|_| anyhow::anyhow!("compression {name:?}: expected none, gzip, snappy, lz4 or zstd"))?;
    Ok(Some(compression))
}

/// Applies `KEY=VALUE` overrides, as `rpk transform deploy --var` does (the command line wins).
pub fn apply_overrides(meta: &mut TransformMeta, overrides: &[String]) -> anyhow::Result<()> {
    for setting in overrides {
        let (key, value) = setting.split_once('=').with_context(|| format!("--env {setting:?}: expected KEY=VALUE"))?;
        match meta.env.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => meta.env.push((key.to_string(), value.to_string())),
        }
    }
    Ok(())
}

/// The broker's checks on a deploy: name, topics and environment.
pub fn validate(meta: &TransformMeta) -> anyhow::Result<()> {
    let no_control = |text: &str| !text.chars().any(char::is_control);
    ensure!(
        !meta.name.is_empty() && meta.name.len() <= 128 && no_control(&meta.name),
        "invalid transform name {:?}: 1 to 128 bytes, no control characters",
        meta.name
    );
    ensure!(
        (1..=8).contains(&meta.output_topics.len()),
        "a transform has 1 to 8 output topics, not {}",
        meta.output_topics.len()
    );
    for (i, topic) in meta.output_topics.iter().enumerate() {
        ensure!(!meta.output_topics[..i].contains(topic), "output topic {topic:?} is listed twice");
        ensure!(*topic != meta.input_topic, "output topic {topic:?} is the input topic (a cycle)");
    }
    ensure!(meta.env.len() <= 128, "at most 128 environment variables, not {}", meta.env.len());
    for (key, value) in &meta.env {
        ensure!(
            !key.is_empty() && key.len() <= 128 && !key.contains('=') && no_control(key),
            "invalid environment variable name {key:?}: 1 to 128 bytes, no '=' and no control characters"
        );
        ensure!(!key.starts_with("REDPANDA_"), "environment variable {key:?}: the REDPANDA_ prefix is reserved");
        ensure!(
            !value.is_empty() && value.len() <= 2_048 && no_control(value),
            "invalid value of environment variable {key}: 1 to 2048 bytes, no control characters"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_output_compression_as_rpk_does() {
        let yaml = |compression: &str| format!("name: t\ninput-topic: in\noutput-topic: out\n{compression}");
        assert_eq!(read_compression(&yaml("")).unwrap(), None);
        assert_eq!(read_compression(&yaml("compression: zstd\n")).unwrap(), Some(Compression::Zstd));
        let error = read_compression(&yaml("compression: brotli\n")).unwrap_err().to_string();
        assert!(error.contains("expected none, gzip, snappy, lz4 or zstd"), "{error}");
    }

    #[test]
    fn the_command_line_wins_over_the_file() {
        let mut meta = read_transform_yaml("name: t\ninput-topic: in\noutput-topic: out\nenv:\n  A: 1\n").unwrap();
        assert_eq!(meta.output_topics, ["out"]);
        apply_overrides(&mut meta, &["A=2".into(), "B=x=y".into()]).unwrap();
        assert_eq!(meta.env, [("A".to_string(), "2".to_string()), ("B".to_string(), "x=y".to_string())]);
        assert!(apply_overrides(&mut meta, &["novalue".into()]).is_err());
    }

    #[test]
    fn refuses_what_the_broker_refuses() {
        let base = TransformMeta {
            name: "t".into(),
            input_topic: "in".into(),
            output_topics: vec!["out".into()],
            env: vec![],
        };
        let with_env = |key: &str, value: &str| TransformMeta { env: vec![(key.into(), value.into())], ..base.clone() };
        for (meta, message) in [
            (with_env("REDPANDA_X", "1"), "reserved"),
            (with_env("A", ""), "1 to 2048 bytes"),
            (with_env("A", &"x".repeat(2_049)), "1 to 2048 bytes"),
            (with_env("A=B", "1"), "no '='"),
            (with_env("A", "line\nbreak"), "control"),
            (TransformMeta { output_topics: vec![], ..base.clone() }, "1 to 8 output topics"),
            (TransformMeta { output_topics: vec!["a".into(), "a".into()], ..base.clone() }, "twice"),
            (TransformMeta { output_topics: vec!["in".into()], ..base.clone() }, "cycle"),
            (TransformMeta { name: String::new(), ..base.clone() }, "invalid transform name"),
        ] {
            let error = validate(&meta).unwrap_err().to_string();
            assert!(error.contains(message), "{error}");
        }
    }
}
