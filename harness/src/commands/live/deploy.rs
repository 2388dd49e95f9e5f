//! `harness deploy`: deploys a module through Redpanda's admin API, as `rpk transform deploy` does
//! (`POST /v1/transform/deploy`: the JSON metadata immediately followed by the wasm bytes), then waits
//! until every partition of the input topic reports `running` (`GET /v1/transform`), failing at once when
//! one reports `errored`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use transform_host::broker::StartOffset;
use transform_host::record_batch::Compression;

use crate::flags::{duration, TransformArgs};

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
    #[arg(long, default_value = "60s", value_parser = duration)]
    wait: i64,
}

/// The deploy request's JSON metadata (`src/v/redpanda/admin/transform.cc`).
pub(crate) fn deploy_metadata(
    meta: &transform_host::TransformMeta,
    compression: Compression,
    from_offset: Option<StartOffset>,
) -> serde_json::Value {
    let environment: Vec<serde_json::Value> =
        meta.env.iter().map(|(key, value)| serde_json::json!({ "key": key, "value": value })).collect();
    let mut metadata = serde_json::json!({
        "name": meta.name,
        "input_topic": meta.input_topic,
        "output_topics": meta.output_topics,
        "environment": environment,
        "compression": compression.name(),
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
    let mut body = deploy_metadata(&meta, transform.compression, args.from_offset).to_string().into_bytes();
    body.extend_from_slice(&wasm);
    let (status, text) = request(&args.admin, "POST", "/v1/transform/deploy", &body)?;
    if !(200..300).contains(&status) {
        bail!("the broker refused the deploy (HTTP {status}): {}", text.trim());
    }
    stderrln!("harness: deployed {} ({} bytes); waiting for every partition to run", meta.name, wasm.len());
    let partitions = partition_count(&args.admin, &meta.input_topic)?;
    let deadline = Instant::now() + Duration::from_millis(args.wait as u64);
    loop {
        let statuses = statuses(&args.admin, &meta.name)?;
        let errored: Vec<String> = statuses
            .iter()
            .filter(|(_, status)| *status == "errored")
            .map(|(partition, _)| partition.to_string())
            .collect();
        if !errored.is_empty() {
            // The listing has no reason (`partition_transform_status`): the module's log has it.
            bail!(
                "{name} errored on partitions {} of {}; the broker restarts it after a back-off, and \
                 `rpk transform logs {name}` shows why",
                errored.join(", "),
                meta.input_topic,
                name = meta.name
            );
        }
        let waiting: Vec<String> = (0..partitions)
            .filter_map(|partition| match statuses.get(&partition).map(String::as_str) {
                Some("running") => None,
                Some(status) => Some(format!("{partition}: {status}")),
                None => Some(format!("{partition}: not listed")),
            })
            .collect();
        if waiting.is_empty() {
            stderrln!("harness: {} is running on {partitions} partitions", meta.name);
            return Ok(std::process::ExitCode::SUCCESS);
        }
        if Instant::now() > deadline {
            bail!(
                "{} is not running on every partition after {} ms: {} of {partitions} partitions of {} run \
                 (partition {})",
                meta.name,
                args.wait,
                partitions - waiting.len() as u64,
                meta.input_topic,
                waiting.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The input topic's partition count, from `GET /v1/partitions/kafka/TOPIC`
/// (`src/v/redpanda/admin/partition.cc`): one entry per partition.
fn partition_count(admin: &str, topic: &str) -> anyhow::Result<u64> {
    let (status, text) = request(admin, "GET", &format!("/v1/partitions/kafka/{topic}"), &[])?;
    if !(200..300).contains(&status) {
        bail!("reading the partitions of {topic:?} (HTTP {status}): {}", text.trim());
    }
    let partitions: Vec<serde_json::Value> =
        serde_json::from_str(&text).with_context(|| format!("the partitions of {topic:?} are not a JSON array"))?;
    Ok(partitions.len() as u64)
}

/// The status of each partition the transform `name` lists (`GET /v1/transform`: `running`, `inactive`,
/// `errored` or `unknown`).
fn statuses(admin: &str, name: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let (status, text) = request(admin, "GET", "/v1/transform", &[])?;
    if !(200..300).contains(&status) {
        bail!("listing transforms (HTTP {status}): {}", text.trim());
    }
    let transforms: serde_json::Value = serde_json::from_str(&text).context("the transform list is not JSON")?;
    Ok(transforms
        .as_array()
        .into_iter()
        .flatten()
        .filter(|transform| transform["name"] == name)
        .flat_map(|transform| transform["status"].as_array().cloned().unwrap_or_default())
        .filter_map(|status| Some((status["partition"].as_u64()?, status["status"].as_str()?.to_string())))
        .collect())
}

impl DeployArgs {
    fn transform_wasm(&self) -> &std::path::Path {
        self.transform.wasm()
    }
}

/// How many redirects a request follows. A broker forwards a deploy to the controller leader itself, but
/// answers with a redirect to the leader when it learns that leadership moved (`not_leader_controller` in
/// `admin_server::throw_on_error`), and again while it moves.
const MAX_REDIRECTS: usize = 3;

/// One HTTP/1.1 request to `base` (`http://HOST:PORT`) and `path`, following the broker's redirects;
/// returns the status and the body.
fn request(base: &str, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
    let authority = base
        .strip_prefix("http://")
        .with_context(|| format!("--admin {base:?}: expected http://HOST:PORT"))?
        .trim_end_matches('/');
    let (mut authority, mut target) = (authority.to_string(), path.to_string());
    for _ in 0..=MAX_REDIRECTS {
        let answer = exchange(&authority, method, &target, body)?;
        // 307 and 308 repeat the request, body and all, at the Location.
        let location = answer.header("location").filter(|_| matches!(answer.status, 307 | 308));
        let Some(location) = location else {
            return Ok((answer.status, String::from_utf8_lossy(&answer.body).into_owned()));
        };
        (authority, target) = redirected(&authority, location).with_context(|| {
            format!("the admin API redirects {method} {path} to {location:?}, which the harness cannot follow")
        })?;
        // The broker asks for a pause on every second redirect in a row, to let leadership settle.
        if let Some(seconds) = answer.header("retry-after").and_then(|value| value.parse::<u64>().ok()) {
            std::thread::sleep(Duration::from_secs(seconds.min(10)));
        }
    }
    bail!(
        "{method} {path}: the admin API redirected more than {MAX_REDIRECTS} times, last to http://{authority}{target}"
    )
}

/// The server and path a Location names: an `http://` URL, or a path on the same server.
fn redirected(authority: &str, location: &str) -> Option<(String, String)> {
    match location.strip_prefix("http://") {
        Some(url) => {
            let (server, path) = url.split_at(url.find('/').unwrap_or(url.len()));
            Some((server.to_string(), if path.is_empty() { "/" } else { path }.to_string()))
        }
        None => location.starts_with('/').then(|| (authority.to_string(), location.to_string())),
    }
}

/// An HTTP answer: its status, header fields (names in lower case) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(field, _)| field == name).map(|(_, value)| value.as_str())
    }
}

/// Sends one request on a connection of its own and reads the answer.
fn exchange(authority: &str, method: &str, path: &str, body: &[u8]) -> anyhow::Result<Answer> {
    let mut stream =
        TcpStream::connect(authority).with_context(|| format!("connecting to the admin API at {authority}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json+wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    read_answer(&mut BufReader::new(stream)).context("reading the admin API's answer")
}

/// Reads one answer, its body as its framing says (chunked, or Content-Length): a keep-alive server may
/// leave the connection open after it, whatever the request asked. Only an answer with neither ends
/// with the connection.
fn read_answer(reader: &mut impl BufRead) -> anyhow::Result<Answer> {
    let status_line = read_line(reader)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer: {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let mut answer = Answer { status, headers, body: Vec::new() };
    if answer.header("transfer-encoding").is_some_and(|coding| coding.to_ascii_lowercase().ends_with("chunked")) {
        loop {
            let line = read_line(reader)?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).with_context(|| format!("a bad chunk size: {line:?}"))?;
            if size == 0 {
                // Trailer fields, up to the empty line that ends the answer.
                while !read_line(reader)?.is_empty() {}
                break;
            }
            let start = answer.body.len();
            answer.body.resize(start + size, 0);
            reader.read_exact(&mut answer.body[start..])?;
            read_line(reader)?;
        }
    } else if let Some(length) = answer.header("content-length") {
        let length = length.parse().with_context(|| format!("a bad Content-Length: {length:?}"))?;
        answer.body.resize(length, 0);
        reader.read_exact(&mut answer.body)?;
    } else if !matches!(status, 204 | 304) {
        reader.read_to_end(&mut answer.body)?;
    }
    Ok(answer)
}

/// One line of an answer's head or chunk framing, without its CRLF.
fn read_line(reader: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        bail!("the connection closed in the middle of the answer");
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
