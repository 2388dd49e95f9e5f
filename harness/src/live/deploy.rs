//! `harness deploy`: deploys a module through Redpanda's admin API, as `rpk transform deploy` does
//! (`POST /v1/transform/deploy`: the JSON metadata immediately followed by the wasm bytes), then waits
//! until every partition reports `running` (`GET /v1/transform`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use harness::broker::StartOffset;

use crate::TransformArgs;

#[derive(Args)]
pub(crate) struct DeployArgs {
    /// The admin API, e.g. http://127.0.0.1:9644.
    #[arg(long)]
    admin: String,
    #[command(flatten)]
    transform: TransformArgs,
    /// Where a first deploy starts reading: `@T` (epoch milliseconds), `+N` or `-N` (rpk's `--from-offset`).
    #[arg(long, value_name = "@T|+N|-N", allow_hyphen_values = true)]
    from_offset: Option<StartOffset>,
    /// How long to wait for every partition to run.
    #[arg(long, default_value = "60s", value_parser = crate::duration)]
    wait: i64,
}

/// The deploy request's JSON metadata (`src/v/redpanda/admin/transform.cc`).
pub(crate) fn deploy_metadata(
    meta: &harness::host::TransformMeta,
    from_offset: Option<StartOffset>,
) -> serde_json::Value {
    let environment: Vec<serde_json::Value> =
        meta.env.iter().map(|(key, value)| serde_json::json!({ "key": key, "value": value })).collect();
    let mut metadata = serde_json::json!({
        "name": meta.name,
        "input_topic": meta.input_topic,
        "output_topics": meta.output_topics,
        "environment": environment,
    });
    if let Some(start) = from_offset {
        let (format, value) = match start {
            StartOffset::Timestamp(ms) => ("timestamp", ms),
            StartOffset::FromStart(n) => ("from_start", n),
            StartOffset::FromEnd(n) => ("from_end", n),
        };
        metadata["offset"] = serde_json::json!({ "format": format, "value": value });
    }
    metadata
}

pub(crate) fn deploy(args: DeployArgs) -> anyhow::Result<std::process::ExitCode> {
    // The harness's own checks first: what the broker's deploy refuses is refused here with the reason.
    let transform = args.transform.load()?;
    let meta = transform.meta;
    let wasm = std::fs::read(args.transform_wasm()).context("reading the module")?;
    let mut body = deploy_metadata(&meta, args.from_offset).to_string().into_bytes();
    body.extend_from_slice(&wasm);
    let (status, text) = request(&args.admin, "POST", "/v1/transform/deploy", &body)?;
    if !(200..300).contains(&status) {
        bail!("the broker refused the deploy (HTTP {status}): {}", text.trim());
    }
    stderrln!("harness: deployed {} ({} bytes); waiting for every partition to run", meta.name, wasm.len());
    let deadline = Instant::now() + Duration::from_millis(args.wait as u64);
    loop {
        let (status, text) = request(&args.admin, "GET", "/v1/transform", &[])?;
        if !(200..300).contains(&status) {
            bail!("listing transforms (HTTP {status}): {}", text.trim());
        }
        let transforms: serde_json::Value = serde_json::from_str(&text).context("the transform list is not JSON")?;
        let statuses: Vec<(i64, String)> = transforms
            .as_array()
            .into_iter()
            .flatten()
            .filter(|transform| transform["name"] == meta.name.as_str())
            .flat_map(|transform| transform["status"].as_array().cloned().unwrap_or_default())
            .map(|status| {
                (status["partition"].as_i64().unwrap_or(-1), status["status"].as_str().unwrap_or("").to_string())
            })
            .collect();
        if !statuses.is_empty() && statuses.iter().all(|(_, status)| status == "running") {
            stderrln!("harness: {} is running on {} partitions", meta.name, statuses.len());
            return Ok(std::process::ExitCode::SUCCESS);
        }
        if Instant::now() > deadline {
            bail!("{} is not running on every partition after {} ms: {statuses:?}", meta.name, args.wait);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl DeployArgs {
    fn transform_wasm(&self) -> &std::path::Path {
        self.transform.wasm()
    }
}

/// One HTTP/1.1 request to `base` (`http://HOST:PORT`); returns the status and the body.
fn request(base: &str, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
    let authority = base
        .strip_prefix("http://")
        .with_context(|| format!("--admin {base:?}: expected http://HOST:PORT"))?
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(authority).with_context(|| format!("connecting to the admin API at {base}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json+wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).context("reading the admin API's answer")?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer: {head:?}"))?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Ok((status, body))
}

/// The body of a chunked HTTP answer.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
