//! `make bench`: the project's workloads through the native record handler and through the module in the
//! harness, side by side in one table (Markdown, as the README keeps it), after the README's previous one.
//! Numbers, not a test: nothing is asserted. Each figure is the best of three runs; the harness is the
//! build `make demo` runs and the module the one `make build` makes. Times move with a shared machine's load;
//! instructions, which callgrind counts for the ratio of five aggregates to the count, do not. An argument
//! runs only the workloads whose names start with it (`cargo run -p integration-tests --bin bench -- dense`).

use std::cell::OnceCell;
use std::io::Write;
use std::rc::Rc;
use std::time::Instant;

use clickstream_aggregation::aggregator::{Aggregator, Output};
use clickstream_aggregation::config::Config;
use clickstream_aggregation::dead_letter::Reason;
use harness::generate::{Generator, GeneratorConfig};
use integration_tests::replay::{clickstream_config, meta, module, module_bytes};
use transform_host::guests::CopyingGuest;
use transform_host::pipeline::{OutputRecord, OutputSink, Pipeline, PipelineConfig, ProducerRecord};
use transform_host::{EngineProfile, Limits, LogLine, TransformModule, FUEL_PER_MS};

const RUNS: usize = 3;
/// Record time for the native runs: far enough ahead that no event is refused as from the future.
const RECORD_MS: i64 = 4_102_444_800_000;
const FIVE_AGGREGATES: &str =
    "n=count,secs=sum(on_site_seconds),low=min(on_site_seconds),high=max(on_site_seconds),avg_viewed=avg(viewed_percent)";

struct Workload {
    name: &'static str,
    env: Vec<(&'static str, &'static str)>,
    values: Stream,
}

/// Generated records, shared by the workloads that read them.
type Stream = Rc<Vec<Vec<u8>>>;

/// The seed's and the dense stream's length; the wide stream is a third as long.
const EVENTS: u64 = 300_000;
/// The seed stream's length when callgrind counts instructions, which runs it some fifty times slower.
const COUNTED_EVENTS: u64 = 30_000;

fn generated(events: u64, users: u32, rate_per_sec: f64) -> Stream {
    Rc::new(Generator::new(GeneratorConfig { seed: 7, events, users, rate_per_sec, ..Default::default() }).collect())
}

fn seed_stream(events: u64) -> Stream {
    generated(events, 10, 4.0)
}

/// The window analytics on the seed's stream: unique users, estimated unique users, the 95th percentile,
/// and the top ten of each window.
const ANALYTICS: &str =
    "users=count_distinct(user_id),approx_users=approx_count_distinct(user_id),p95=percentile(on_site_seconds, 0.95)";

/// The workloads whose names start with `only`, on streams of `events` events. A stream is generated once, and
/// only if one of them reads it.
fn workloads(only: &str, events: u64) -> Vec<Workload> {
    let (seed, dense, wide) = (OnceCell::new(), OnceCell::new(), OnceCell::new());
    let seed = || Rc::clone(seed.get_or_init(|| seed_stream(events)));
    let dense = || Rc::clone(dense.get_or_init(|| generated(events, 50, 1_000.0)));
    let wide = || Rc::clone(wide.get_or_init(|| generated(events / 3, u32::MAX, 1_000.0)));
    let wide_with = |aggregates| vec![("STATE_BUDGET", "1536KiB"), ("AGGREGATES", aggregates)];
    let all: [(_, _, &dyn Fn() -> Stream); 9] = [
        ("seed (10 users, 250 ms apart)", vec![], &seed),
        ("seed, five aggregates", vec![("AGGREGATES", FIVE_AGGREGATES)], &seed),
        (
            "seed, analytics by url, top 10",
            vec![("GROUP_BY", "url"), ("AGGREGATES", ANALYTICS), ("TOP_N", "10")],
            &seed,
        ),
        ("dense (50 groups, 1 ms apart)", vec![("GROUP_BY", "user_id")], &dense),
        ("wide (a new user each event)", vec![("STATE_BUDGET", "1536KiB")], &wide),
        ("wide, count_distinct(user_id)", wide_with("n=count,users=count_distinct(user_id)"), &wide),
        ("wide, approx_count_distinct(user_id)", wide_with("n=count,users=approx_count_distinct(user_id)"), &wide),
        ("wide, percentile(on_site_seconds, 0.95)", wide_with("n=count,p95=percentile(on_site_seconds, 0.95)"), &wide),
        ("wide, TOP_N=10", vec![("STATE_BUDGET", "1536KiB"), ("TOP_N", "10")], &wide),
    ];
    all.into_iter()
        .filter(|(name, ..)| name.starts_with(only))
        .map(|(name, env, values)| Workload { name, env, values: values() })
        .collect()
}

/// What one run did and how long it took.
#[derive(Default, Clone, Copy)]
struct Run {
    seconds: f64,
    events: u64,
    rows: u64,
    peak_memory_bytes: u64,
    worst_record_ms: f64,
    /// The most groups open at once, and the state bytes per group then (native runs).
    open_groups: usize,
    bytes_per_group: usize,
}

impl Run {
    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.seconds
    }

    fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.seconds
    }
}

fn best_of(mut run: impl FnMut() -> Run) -> Run {
    (0..RUNS).map(|_| run()).min_by(|a, b| a.seconds.total_cmp(&b.seconds)).expect("RUNS > 0")
}

/// Formats rows into a counter, as the module's writer would hand them to the broker.
struct CountRows(u64);

impl Output for CountRows {
    fn row(&mut self, key: &[u8], value: &[u8], _incomplete: bool, _early: bool) {
        self.0 += std::hint::black_box(key.len() + value.len()) as u64;
    }
    fn dead_letter(&mut self, _topic: &str, _reason: Reason, _detail: &str, _keep_value: bool) {}
    fn log(&mut self, _line: &str) {}
}

#[inline(never)] // callgrind counts the instructions between its entry and its exit
fn native(workload: &Workload) -> Run {
    let env = meta(&workload.env).environment();
    let config = Config::from_env(|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .expect("the bench configurations are valid");
    let mut aggregator = Aggregator::new(config);
    let mut out = CountRows(0);
    let mut widest = (0, 0);
    let started = Instant::now();
    for value in workload.values.iter() {
        aggregator.on_record(Some(value), RECORD_MS, &mut out);
        let stats = aggregator.engine().stats();
        if stats.open_groups > widest.0 {
            widest = (stats.open_groups, stats.state_bytes);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Run {
        seconds,
        events: workload.values.len() as u64,
        rows: aggregator.totals().rows,
        open_groups: widest.0,
        bytes_per_group: widest.1 / widest.0.max(1),
        ..Run::default()
    }
}

/// Writes the first output topic's values to a file, a line each, as `harness replay --output` does.
struct FileRows(std::io::BufWriter<std::fs::File>);

impl OutputSink for FileRows {
    fn record(&mut self, record: &OutputRecord<'_>) -> anyhow::Result<()> {
        if record.topic_index == 0 {
            self.0.write_all(record.payload.value.unwrap_or(b"null"))?;
            self.0.write_all(b"\n")?;
        }
        Ok(())
    }
    fn log(&mut self, _shard: u32, _line: &LogLine) {}
}

fn in_harness(compiled: &TransformModule, workload: &Workload, partitions: u32, shards: u32) -> Run {
    let path = std::env::temp_dir().join("clickstream-bench-rows.jsonl");
    let mut sink = FileRows(std::io::BufWriter::new(std::fs::File::create(&path).expect("a temporary file")));
    let mut config = PipelineConfig { partitions, ..clickstream_config() };
    config.broker.shards = shards;
    let mut pipeline = Pipeline::new(compiled.clone(), meta(&workload.env), config, &mut sink);
    pipeline.start().unwrap_or_else(|failure| panic!("{}: {failure}", workload.name));
    // The records are made before the clock starts: their copies are the bench's work, not the harness's.
    let records: Vec<ProducerRecord> = workload
        .values
        .iter()
        .map(|value| ProducerRecord { value: Some(value.clone()), ..ProducerRecord::default() })
        .collect();
    let started = Instant::now();
    for record in records {
        pipeline.push(record).unwrap_or_else(|failure| panic!("{}: {failure}", workload.name));
    }
    let stats = pipeline.finish().unwrap_or_else(|failure| panic!("{}: {failure}", workload.name));
    sink.0.flush().expect("writing the rows file");
    Run {
        seconds: started.elapsed().as_secs_f64(),
        events: workload.values.len() as u64,
        rows: stats.broker.written[0],
        peak_memory_bytes: stats.broker.peak_memory_bytes,
        worst_record_ms: stats.broker.max_record_fuel as f64 / FUEL_PER_MS as f64,
        ..Run::default()
    }
}

fn millions(value: f64) -> String {
    format!("{:.2} M", value / 1e6)
}

/// The flag the bench passes to itself to run under callgrind: one native run of the named workload on a
/// stream of `COUNTED_EVENTS` events, counted from the entry to the exit of `native`.
const COUNT_INSTRUCTIONS: &str = "--count-instructions-of";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, name] = &args[..] {
        if flag == COUNT_INSTRUCTIONS {
            let workload = workloads(name, COUNTED_EVENTS).into_iter().next().expect("a workload of that name");
            println!("{}", native(&workload).rows);
            return;
        }
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap_or_default();
    let previous: Vec<&str> = readme
        .lines()
        .skip_while(|line| !line.starts_with("<!-- bench table -->"))
        .skip(1)
        .take_while(|line| line.starts_with('|'))
        .collect();
    if !previous.is_empty() {
        println!("Previous (README):\n{}\n", previous.join("\n"));
    }
    let clickstream = module(Limits::default());
    let with_guard_pages = TransformModule::load_for(module_bytes(), Limits::default(), EngineProfile::GuardPages)
        .expect("the module loads");
    let only = args.first().cloned().unwrap_or_default();
    println!("<!-- bench table -->");
    println!("| Workload | Native events/s | Native rows/s | ns/row | Module events/s | Module rows/s | Module rows/s, guard pages | Module/native | Peak memory | Slowest record |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut measured = Vec::new();
    for workload in workloads(&only, EVENTS) {
        let native = best_of(|| native(&workload));
        let module = best_of(|| in_harness(&clickstream, &workload, 1, 1));
        let unchecked = best_of(|| in_harness(&with_guard_pages, &workload, 1, 1));
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {:.0} % | {:.2} MiB | {:.1} ms |",
            workload.name,
            millions(native.events_per_second()),
            millions(native.rows_per_second()),
            native.seconds * 1e9 / native.rows.max(1) as f64,
            millions(module.events_per_second()),
            millions(module.rows_per_second()),
            millions(unchecked.rows_per_second()),
            100.0 * module.seconds.recip() / native.seconds.recip(),
            module.peak_memory_bytes as f64 / (1 << 20) as f64,
            module.worst_record_ms,
        );
        measured.push((workload.name, native, module));
    }
    if "identity".starts_with(&only) {
        let identity = TransformModule::load(CopyingGuest::default().wat().as_bytes(), Limits::default())
            .expect("the identity transform loads");
        let seed = Workload { name: "identity", env: vec![], values: seed_stream(EVENTS) };
        let one = best_of(|| in_harness(&identity, &seed, 2, 1));
        let two = best_of(|| in_harness(&identity, &seed, 2, 2));
        println!(
            "| identity transform, harness alone (2 partitions) | | | | {} (1 shard), {} (2 shards: {:.2}×) | | | | | |",
            millions(one.events_per_second()),
            millions(two.events_per_second()),
            two.events_per_second() / one.events_per_second(),
        );
        if only.is_empty() {
            targets(&measured, (one, two), five_vs_count_instructions());
        }
    }
    let wide: Vec<_> = measured.iter().filter(|(name, ..)| name.starts_with("wide")).collect();
    if !wide.is_empty() {
        println!("\nState per open group on the wide stream at STATE_BUDGET=1536KiB (what fits a 2 MiB VM):");
        for (name, run, _) in wide {
            println!("- {name}: at most {} open groups, {} bytes each", run.open_groups, run.bytes_per_group);
        }
    }
}

/// Instructions per row of the native record handler for a workload, as callgrind counts them: unlike times,
/// the same on a shared machine however busy. `None` without `valgrind` on the PATH.
fn instructions_per_row(name: &str) -> Option<f64> {
    let output = std::process::Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null", "--toggle-collect=*bench::native"])
        .arg(std::env::current_exe().ok()?)
        .args([COUNT_INSTRUCTIONS, name])
        .output()
        .ok()?;
    let collected = String::from_utf8_lossy(&output.stderr)
        .lines()
        .find_map(|line| line.split("Collected : ").nth(1).and_then(|count| count.trim().parse::<f64>().ok()))?;
    let rows = String::from_utf8_lossy(&output.stdout).trim().parse::<f64>().ok()?;
    Some(collected / rows)
}

/// The ratio of five aggregates to the count, per row, in instructions (see [`instructions_per_row`]).
fn five_vs_count_instructions() -> String {
    eprintln!("counting instructions with callgrind");
    match (instructions_per_row("seed, five aggregates"), instructions_per_row("seed (10 users, 250 ms apart)")) {
        (Some(five), Some(count)) => format!("{:.2}× in instructions ({five:.0} / {count:.0} a row)", five / count),
        _ => "instructions not counted (`valgrind` missing or failed)".to_string(),
    }
}

/// The performance issue's table: each figure when the issue was filed, its target, and this run's.
fn targets(measured: &[(&str, Run, Run)], (one_shard, two_shards): (Run, Run), five_vs_count: String) {
    let run = |name: &str| {
        let (_, native, module) = measured.iter().find(|(workload, ..)| *workload == name).expect("a bench workload");
        (*native, *module)
    };
    let (seed_native, seed_module) = run("seed (10 users, 250 ms apart)");
    let (five_native, _) = run("seed, five aggregates");
    let (wide_native, _) = run("wide (a new user each event)");
    let ns_per_row = |run: Run| run.seconds * 1e9 / run.rows.max(1) as f64;
    println!("\n<!-- bench targets -->");
    println!("| Workload | When the issue was filed | Target | This run |");
    println!("|---|---|---|---|");
    let rows = [
        (
            "seed job, module in the harness, rows to a file",
            "0.64–0.71 M rows/s",
            "≥ 4 M rows/s",
            format!("{} rows/s", millions(seed_module.rows_per_second())),
        ),
        (
            "seed job, native record handler",
            "2.35–2.95 M rows/s",
            "≥ 10 M rows/s",
            format!("{} rows/s", millions(seed_native.rows_per_second())),
        ),
        (
            "five aggregates vs count, per row (native)",
            "1.8–1.9×",
            "≤ 1.3×",
            format!("{:.2}×; {five_vs_count}", ns_per_row(five_native) / ns_per_row(seed_native)),
        ),
        (
            "module vs native (broker's configuration)",
            "18–33 %",
            "≥ 50 %",
            format!("{:.0} %", 100.0 * seed_native.seconds / seed_module.seconds),
        ),
        (
            "identity transform, harness alone",
            "0.45 M rec/s",
            "≥ 3 M rec/s",
            format!("{} rec/s", millions(one_shard.events_per_second())),
        ),
        (
            "`--shards 2` vs 1",
            "1.0×",
            "≥ 1.7×",
            format!("{:.2}×", two_shards.events_per_second() / one_shard.events_per_second()),
        ),
        (
            "open groups, 2 MiB VM (STATE_BUDGET=1536KiB, native)",
            "6,272",
            "≥ 20,000",
            wide_native.open_groups.to_string(),
        ),
    ];
    for (workload, filed, target, now) in rows {
        println!("| {workload} | {filed} | {target} | {now} |");
    }
}
