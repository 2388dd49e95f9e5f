//! The VM: one instance of a transform module, driven the broker's way.
//!
//! `_start` runs on a wasmtime fiber, as in the broker (`wasmtime.cc`): the guest's `read_batch_header`
//! suspends it until the host hands it a batch, and re-entering it tells the host the previous batch is
//! done. The host resumes the fiber on its own thread, so handing over a batch costs no thread switch.
//! Host functions follow the broker's code (see `redpanda_transform`, [`crate::wasi`] and
//! [`crate::schema_registry`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use wasmtime::{Caller, Config, Engine, Extern, ExternType, InstancePre, Linker, Module, Store, Trap, ValType};

use crate::wire::{decode_write_options, OptionsError, PayloadView, WriteTarget};

/// The broker's default limits; each is a flag of the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory per VM (`data_transforms_per_function_memory_limit`).
    pub memory_bytes: u64,
    /// CPU per record (`data_transforms_runtime_limit_ms`), as fuel at 2,000,000 units per ms.
    pub runtime_ms: u64,
    /// Native wasm stack (`max_wasm_stack`).
    pub stack_bytes: usize,
    /// Largest module accepted (`data_transforms_binary_max_size`).
    pub binary_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_bytes: 2 << 20, runtime_ms: 3_000, stack_bytes: 64 << 10, binary_bytes: 10 << 20 }
    }
}

pub const FUEL_PER_MS: u64 = 2_000_000;
/// Log lines kept for a failure report.
const LOG_TAIL: usize = 20;

/// Which transform this VM is: its name (argv[0]), topics and user environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformMeta {
    pub name: String,
    pub input_topic: String,
    pub output_topics: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl TransformMeta {
    /// The environment the broker gives the VM: the user's variables, then the input and output topics.
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

/// One record of an input batch, payload already in wire form.
#[derive(Debug, Clone)]
pub struct BatchRecord {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub payload: Vec<u8>,
}

/// An input batch as the broker reads it from a partition.
#[derive(Debug, Clone)]
pub struct InputBatch {
    pub partition: u32,
    pub records: Vec<BatchRecord>,
}

/// One record the guest wrote: to which output topic (index into `output_topics`), and where its
/// payload is in [`BatchOutput::bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub topic: usize,
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// stdout
    Info,
    /// stderr
    Warn,
}

/// One `fd_write` to stdout or stderr: one log event in the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub text: String,
}

/// What one batch produced.
#[derive(Debug, Clone, Default)]
pub struct BatchOutput {
    /// The payloads the guest wrote, in wire form, one after another (one buffer for the whole batch).
    pub bytes: Vec<u8>,
    pub written: Vec<Written>,
    pub logs: Vec<LogLine>,
    /// The most fuel any record of the batch used.
    pub max_record_fuel: u64,
    /// The largest linear memory so far, in bytes.
    pub peak_memory_bytes: u64,
}

impl BatchOutput {
    /// Each record written: its topic index and payload.
    pub fn records(&self) -> impl Iterator<Item = (usize, PayloadView<'_>)> {
        self.written.iter().map(|written| {
            let payload = PayloadView::parse(&self.bytes[written.start..written.end]);
            (written.topic, payload.expect("payloads are validated when written"))
        })
    }
}

/// Why a VM stopped: the broker would mark the processor `errored` and restart it.
#[derive(Debug, Clone)]
pub struct VmFailure {
    pub reason: String,
    /// Partition and offset of the record being handled, if any.
    pub record: Option<(u32, i64)>,
    pub last_logs: Vec<LogLine>,
}

impl std::fmt::Display for VmFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reason)?;
        if let Some((partition, offset)) = self.record {
            write!(f, "\n  while handling partition {partition} offset {offset}")?;
        }
        if !self.last_logs.is_empty() {
            write!(f, "\n  last log lines of the module:")?;
            for line in &self.last_logs {
                write!(f, "\n    {}", line.text.trim_end())?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for VmFailure {}

/// A compiled, validated module, ready to start VMs from (a restart reuses it, as the broker's cache does).
#[derive(Clone)]
pub struct TransformModule {
    engine: Engine,
    pre: InstancePre<GuestState>,
    limits: Limits,
    pub imports_schema_registry: bool,
    /// What the harness runs but the broker would not (printed by the CLI before a run).
    pub warnings: Vec<String>,
}

impl TransformModule {
    /// Compiles `bytes` (a `.wasm`, or `.wat` text) and refuses what the broker's deploy would refuse.
    pub fn load(bytes: &[u8], limits: Limits) -> anyhow::Result<TransformModule> {
        anyhow::ensure!(
            bytes.len() <= limits.binary_bytes,
            "invalid WebAssembly module: {} bytes is over the {}-byte limit (data_transforms_binary_max_size)",
            bytes.len(),
            limits.binary_bytes
        );
        let mut config = Config::new();
        config.consume_fuel(true);
        config.max_wasm_stack(limits.stack_bytes);
        // The guest runs on a fiber: its stack holds the wasm stack and the host functions it calls.
        config.async_stack_size(limits.stack_bytes + (1 << 20));
        let engine = Engine::new(&config)?;
        let module = Module::new(&engine, bytes).map_err(|e| anyhow::anyhow!("invalid WebAssembly module: {e}"))?;
        let imports_schema_registry = validate(&module)?;
        let mut linker = Linker::new(&engine);
        link_transform_abi(&mut linker)?;
        crate::schema_registry::link(&mut linker)?;
        crate::wasi::link(&mut linker)?;
        let pre = linker.instantiate_pre(&module).map_err(|e| {
            anyhow::anyhow!(
                "the module imports a function the broker does not provide, so Redpanda would refuse it: {e}"
            )
        })?;
        let warnings = broker_differences(&module);
        Ok(TransformModule { engine, pre, limits, imports_schema_registry, warnings })
    }
}

/// Modules the harness runs but the broker does not start. A declared memory maximum: the broker passes
/// the module's limits in 64 KiB pages to its heap pool, which compares them with its heap size in bytes
/// (`wasmtime.cc`, `create_instance`), so any maximum is below the heap and the VM fails to start with
/// "unable to allocate memory within requested bounds".
fn broker_differences(module: &Module) -> Vec<String> {
    let maximum = module.exports().find_map(|export| match export.ty() {
        ExternType::Memory(memory) if export.name() == "memory" => memory.maximum(),
        _ => None,
    });
    maximum
        .map(|pages| {
            format!(
                "the module's memory declares a maximum ({pages} pages): Redpanda deploys it but fails to start it \
                 (\"unable to allocate memory within requested bounds\"); build it without a maximum, as Rust does by default"
            )
        })
        .into_iter()
        .collect()
}

/// The deploy-time checks of the broker (`wasmtime_runtime::validate`). Returns whether the module uses
/// the schema-registry ABI.
fn validate(module: &Module) -> anyhow::Result<bool> {
    let is_void =
        |ty: &ExternType| matches!(ty, ExternType::Func(f) if f.params().len() == 0 && f.results().len() == 0);
    let start = module.exports().find(|export| export.name() == "_start");
    anyhow::ensure!(
        start.is_some_and(|export| is_void(&export.ty())),
        "invalid WebAssembly - missing required WASI functions: no `_start` export of type [] -> []"
    );
    let mut memory_exports = module.exports().filter(|export| matches!(export.ty(), ExternType::Memory(_)));
    match memory_exports.next() {
        Some(export) if export.name() != "memory" => {
            anyhow::bail!(
                "invalid WebAssembly module: invalid memory export name {:?} (must be \"memory\")",
                export.name()
            )
        }
        Some(export) if matches!(export.ty(), ExternType::Memory(m) if m.is_64()) => {
            anyhow::bail!("invalid WebAssembly module: 64-bit memories are not supported")
        }
        Some(_) => {}
        None => anyhow::bail!("invalid WebAssembly module: no memory export named \"memory\""),
    }
    let mut abi = false;
    let mut schema_registry = false;
    for import in module.imports() {
        match (import.module(), import.name()) {
            ("redpanda_transform", "check_abi_version_1" | "check_abi_version_2") if is_void(&import.ty()) => {
                abi = true
            }
            ("redpanda_schema_registry", name) if name.starts_with("check_abi_version_") => {
                anyhow::ensure!(
                    name == "check_abi_version_0" && is_void(&import.ty()),
                    "invalid WebAssembly - unsupported Schema Registry client: imports redpanda_schema_registry.{name}"
                );
                schema_registry = true;
            }
            _ => {}
        }
    }
    anyhow::ensure!(
        abi,
        "invalid WebAssembly - missing required transform functions: no import of redpanda_transform.check_abi_version_1 or _2"
    );
    Ok(schema_registry)
}

/// What the guest tells the host when it suspends in `read_batch_header`.
enum GuestEvent {
    /// The guest reached its first `read_batch_header`: started.
    Ready(Vec<LogLine>),
    /// The guest asked for the next batch: the previous one is done.
    BatchDone(BatchOutput),
}

/// Where the host and the suspended guest leave things for each other.
#[derive(Default)]
struct Mailbox {
    batch: Option<Arc<InputBatch>>,
    event: Option<GuestEvent>,
}

/// State of one VM, owned by its store.
pub(crate) struct GuestState {
    limiter: MemoryLimiter,
    fuel_per_record: u64,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<String>,
    output_topics: Vec<String>,
    /// The guest's memory export, once instantiated.
    memory: Option<wasmtime::Memory>,
    mailbox: Arc<Mutex<Mailbox>>,
    current: Option<(Arc<InputBatch>, usize)>,
    started: bool,
    output: BatchOutput,
    log_tail: VecDeque<LogLine>,
    /// Milliseconds: the current record's timestamp (0 before the first batch).
    pub(crate) wall_clock_ms: i64,
    pub(crate) monotonic: MonotonicClock,
    pub(crate) schema_registry: crate::schema_registry::Registry,
}

impl GuestState {
    pub(crate) fn log(&mut self, level: LogLevel, text: String) {
        let line = LogLine { level, text };
        if self.log_tail.len() == LOG_TAIL {
            self.log_tail.pop_front();
        }
        self.log_tail.push_back(line.clone());
        self.output.logs.push(line);
    }

    /// The record being handled: the last one read, or the batch's first before any is read (the SDK
    /// sizes its buffer for the batch's largest record in between, and may run out of memory there).
    fn current_record(&self) -> Option<(u32, i64)> {
        let (batch, next) = self.current.as_ref()?;
        Some((batch.partition, batch.records.get(next.saturating_sub(1))?.offset))
    }
}

struct MemoryLimiter {
    limit: u64,
    peak: u64,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Refusing makes `memory.grow` return −1, as in the broker; the guest's allocator then aborts.
        if desired as u64 > self.limit {
            return Ok(false);
        }
        self.peak = self.peak.max(desired as u64);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 16_384)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// The monotonic clock `clock_time_get` reads: 0, then 1 ms more on each read (`wasi.cc`). In the broker it
/// belongs to the core's engine, so a VM that restarts after a trap goes on from where the last one was.
#[derive(Debug, Clone, Default)]
pub struct MonotonicClock(Arc<std::sync::atomic::AtomicU64>);

impl MonotonicClock {
    /// The time in nanoseconds; the next read is 1 ms later.
    pub(crate) fn read(&self) -> u64 {
        self.0.fetch_add(1_000_000, std::sync::atomic::Ordering::Relaxed)
    }
}

/// `_start` running on its fiber; it ends with the guest's failure.
type GuestRun = Pin<Box<dyn Future<Output = VmFailure> + Send>>;

/// A running VM. Dropping it drops the suspended guest, as the broker does on shutdown.
pub struct Vm {
    run: GuestRun,
    mailbox: Arc<Mutex<Mailbox>>,
    failed: Option<VmFailure>,
}

impl Vm {
    /// Instantiates the module and runs `main()` until it first waits for a batch, with a monotonic clock
    /// of its own. Returns the start-up log lines, or the start-up failure.
    pub fn start(module: &TransformModule, meta: &TransformMeta) -> Result<(Vm, Vec<LogLine>), VmFailure> {
        Vm::start_on_clock(module, meta, MonotonicClock::default())
    }

    /// [`Vm::start`] with the monotonic clock of the VMs before it on the same core.
    pub fn start_on_clock(
        module: &TransformModule,
        meta: &TransformMeta,
        monotonic: MonotonicClock,
    ) -> Result<(Vm, Vec<LogLine>), VmFailure> {
        let mailbox = Arc::new(Mutex::new(Mailbox::default()));
        let env = meta.environment().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let fuel_per_record = module.limits.runtime_ms * FUEL_PER_MS;
        let state = GuestState {
            limiter: MemoryLimiter { limit: module.limits.memory_bytes, peak: 0 },
            fuel_per_record,
            args: vec![meta.name.clone()],
            env,
            output_topics: meta.output_topics.clone(),
            memory: None,
            mailbox: mailbox.clone(),
            current: None,
            started: false,
            output: BatchOutput::default(),
            log_tail: VecDeque::new(),
            wall_clock_ms: 0,
            monotonic,
            schema_registry: Default::default(),
        };
        let mut vm = Vm { run: Box::pin(run_guest(module.clone(), state)), mailbox, failed: None };
        match vm.resume() {
            Ok(GuestEvent::Ready(logs)) => Ok((vm, logs)),
            Ok(GuestEvent::BatchDone(_)) => unreachable!("the first event of a guest is Ready"),
            Err(failure) => Err(failure),
        }
    }

    /// Runs one batch to completion: until the guest asks for the next one.
    pub fn transform(&mut self, batch: Arc<InputBatch>) -> Result<BatchOutput, VmFailure> {
        if let Some(failure) = &self.failed {
            return Err(failure.clone());
        }
        if batch.records.is_empty() {
            return Ok(BatchOutput::default()); // the broker skips empty batches
        }
        self.mailbox.lock().expect("the mailbox is never poisoned").batch = Some(batch);
        match self.resume() {
            Ok(GuestEvent::BatchDone(output)) => Ok(output),
            Ok(GuestEvent::Ready(_)) => unreachable!("a guest is Ready once"),
            Err(failure) => {
                self.failed = Some(failure.clone());
                Err(failure)
            }
        }
    }

    /// Runs the guest until it suspends in `read_batch_header` (its event) or ends (its failure).
    fn resume(&mut self) -> Result<GuestEvent, VmFailure> {
        match self.run.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(failure) => Err(failure),
            Poll::Pending => {
                let event = self.mailbox.lock().expect("the mailbox is never poisoned").event.take();
                Ok(event.expect("the guest suspends only in read_batch_header, which leaves an event"))
            }
        }
    }
}

async fn run_guest(module: TransformModule, state: GuestState) -> VmFailure {
    let fuel = state.fuel_per_record;
    let mut store = Store::new(&module.engine, state);
    store.limiter(|state| &mut state.limiter);
    let outcome = async {
        store.set_fuel(fuel)?;
        let instance = module.pre.instantiate_async(&mut store).await?;
        store.data_mut().memory = instance.get_memory(&mut store, "memory");
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        store.set_fuel(fuel)?; // again before `_start`, as the broker does

        start.call_async(&mut store, ()).await
    }
    .await;
    let state = store.data();
    let reason = match outcome {
        Ok(()) => "vm has exited: _start returned".to_string(),
        Err(error) => describe_trap(&error, module.limits),
    };
    VmFailure { reason, record: state.current_record(), last_logs: state.log_tail.iter().cloned().collect() }
}

/// Waits until the host leaves the next batch in the mailbox.
struct NextBatch(Arc<Mutex<Mailbox>>);

impl Future for NextBatch {
    type Output = Arc<InputBatch>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Arc<InputBatch>> {
        match self.0.lock().expect("the mailbox is never poisoned").batch.take() {
            Some(batch) => Poll::Ready(batch),
            None => Poll::Pending,
        }
    }
}

fn describe_trap(error: &wasmtime::Error, limits: Limits) -> String {
    if let Some(exit) = error.downcast_ref::<crate::wasi::ProcExit>() {
        return exit.to_string(); // its reason is in the module's last log lines, not in a backtrace
    }
    let what = match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => {
            format!("wasm trap: out of fuel: the record used more than the CPU limit of {} ms", limits.runtime_ms)
        }
        Some(Trap::StackOverflow) => {
            format!("wasm trap: stack overflow: the wasm stack limit is {} bytes", limits.stack_bytes)
        }
        Some(Trap::UnreachableCodeReached) => {
            "wasm trap: unreachable executed (a Rust panic or abort, e.g. an allocation beyond the memory limit)".into()
        }
        Some(trap) => format!("wasm trap: {trap}"),
        None => format!("{error:#}"),
    };
    match error.downcast_ref::<wasmtime::WasmBacktrace>() {
        Some(trace) if !trace.frames().is_empty() => format!("{what}\n{trace}"),
        _ => what,
    }
}

type Ctx<'a> = Caller<'a, GuestState>;

pub(crate) fn memory(caller: &mut Ctx<'_>) -> wasmtime::Result<wasmtime::Memory> {
    if let Some(memory) = caller.data().memory {
        return Ok(memory);
    }
    // Before `_start` (a wasm start function calling the host): look it up by name.
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| wasmtime::format_err!("failure executing host function: Missing memory export"))
}

fn out_of_bounds() -> wasmtime::Error {
    wasmtime::format_err!("failure executing host function: Out of bounds memory access in FFI")
}

pub(crate) fn read_guest(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let memory = memory(caller)?;
    Ok(guest_range(memory.data(&*caller), ptr, len)?.to_vec())
}

/// `len` bytes of guest memory at `ptr`: the guest's `i32`s are unsigned here, as in the broker.
fn guest_range(data: &[u8], ptr: i32, len: i32) -> wasmtime::Result<&[u8]> {
    let start = ptr as u32 as usize;
    data.get(start..start + len as u32 as usize).ok_or_else(out_of_bounds)
}

pub(crate) fn write_guest(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let memory = memory(caller)?;
    memory.write(&mut *caller, ptr as u32 as usize, bytes).map_err(|_| out_of_bounds())
}

const NO_ACTIVE_TRANSFORM: i32 = -1;
const INVALID_BUFFER: i32 = -2;
const INVALID_WRITE: i32 = -3;

fn link_transform_abi(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    const MODULE: &str = "redpanda_transform";
    linker.func_wrap(MODULE, "check_abi_version_1", || {})?;
    linker.func_wrap(MODULE, "check_abi_version_2", || {})?;
    linker.func_wrap_async(
        MODULE,
        "read_batch_header",
        |mut caller: Ctx<'_>,
         (
            base_offset,
            record_count,
            leader_epoch,
            attributes,
            last_offset_delta,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
        ): (i32, i32, i32, i32, i32, i32, i32, i32, i32, i32)| {
            Box::new(async move {
                if caller.data().started {
                    note_record_fuel(&mut caller)?;
                }
                let state = caller.data_mut();
                let finished = std::mem::take(&mut state.output);
                state.current = None;
                let event = if state.started {
                    GuestEvent::BatchDone(BatchOutput { peak_memory_bytes: state.limiter.peak, ..finished })
                } else {
                    state.started = true;
                    GuestEvent::Ready(finished.logs)
                };
                let mailbox = state.mailbox.clone();
                mailbox.lock().expect("the mailbox is never poisoned").event = Some(event);
                let batch = NextBatch(mailbox).await;
                let first = &batch.records[0];
                let last = batch.records.last().expect("batches are not empty");
                let max_timestamp_ms = batch.records.iter().map(|r| r.timestamp_ms).max().unwrap_or(first.timestamp_ms);
                let largest = batch.records.iter().map(|r| r.payload.len()).max().unwrap_or(0);
                let count = batch.records.len() as i32;
                let last_delta = (last.offset - first.offset) as i32;
                let (first_offset, first_timestamp) = (first.offset, first.timestamp_ms);
                let state = caller.data_mut();
                state.wall_clock_ms = first_timestamp;
                state.current = Some((batch, 0));
                write_guest(&mut caller, base_offset, &first_offset.to_le_bytes())?;
                write_guest(&mut caller, record_count, &count.to_le_bytes())?;
                write_guest(&mut caller, leader_epoch, &1i32.to_le_bytes())?;
                write_guest(&mut caller, attributes, &0i16.to_le_bytes())?;
                write_guest(&mut caller, last_offset_delta, &last_delta.to_le_bytes())?;
                write_guest(&mut caller, base_timestamp, &first_timestamp.to_le_bytes())?;
                write_guest(&mut caller, max_timestamp, &max_timestamp_ms.to_le_bytes())?;
                write_guest(&mut caller, producer_id, &(-1i64).to_le_bytes())?;
                write_guest(&mut caller, producer_epoch, &(-1i16).to_le_bytes())?;
                write_guest(&mut caller, base_sequence, &(-1i32).to_le_bytes())?;
                Ok(largest as i32)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "read_next_record",
        |mut caller: Ctx<'_>,
         attributes: i32,
         timestamp: i32,
         offset: i32,
         buf: i32,
         len: i32|
         -> wasmtime::Result<i32> {
            let Some((batch, next)) = caller.data().current.clone() else { return Ok(NO_ACTIVE_TRANSFORM) };
            let Some(record) = batch.records.get(next) else { return Ok(NO_ACTIVE_TRANSFORM) };
            if next > 0 {
                note_record_fuel(&mut caller)?;
            }
            if (len as u32 as usize) < record.payload.len() {
                return Ok(INVALID_BUFFER); // not consumed: a retry with a larger buffer would succeed
            }
            write_guest(&mut caller, attributes, &[0])?;
            write_guest(&mut caller, timestamp, &record.timestamp_ms.to_le_bytes())?;
            write_guest(&mut caller, offset, &record.offset.to_le_bytes())?;
            write_guest(&mut caller, buf, &record.payload)?;
            let state = caller.data_mut();
            state.current = Some((batch.clone(), next + 1));
            state.wall_clock_ms = record.timestamp_ms;
            let fuel = state.fuel_per_record;
            caller.set_fuel(fuel)?;
            Ok(record.payload.len() as i32)
        },
    )?;
    // The broker bounds-checks every pointer argument before anything else (`ffi::extract_parameters`), so
    // a bad one traps even where the call would otherwise answer −1.
    linker.func_wrap(MODULE, "write_record", |mut caller: Ctx<'_>, buf: i32, len: i32| -> wasmtime::Result<i32> {
        write(&mut caller, buf, len, None)
    })?;
    linker.func_wrap(
        MODULE,
        "write_record_with_options",
        |mut caller: Ctx<'_>, buf: i32, len: i32, options: i32, options_len: i32| -> wasmtime::Result<i32> {
            write(&mut caller, buf, len, Some((options, options_len)))
        },
    )?;
    Ok(())
}

/// One write as the broker handles it: every pointer range is checked before anything else (a bad one
/// traps even where the call would answer −1), then the active transform (−1), the payload (−2) and the
/// options (−2 malformed, −3 no such output topic, a trap for a topic length past them). A good write is
/// kept in the batch's output.
fn write(caller: &mut Ctx<'_>, buf: i32, len: i32, options: Option<(i32, i32)>) -> wasmtime::Result<i32> {
    let options = options.map(|(ptr, len)| read_guest(caller, ptr, len)).transpose()?;
    let memory = memory(caller)?;
    let (data, state) = memory.data_and_store_mut(caller);
    let bytes = guest_range(data, buf, len)?;
    if state.current.is_none() {
        return Ok(NO_ACTIVE_TRANSFORM);
    }
    if PayloadView::parse(bytes).is_none() {
        return Ok(INVALID_BUFFER);
    }
    let topic = match options.as_deref().map(decode_write_options) {
        None | Some(Ok(WriteTarget::DefaultTopic)) => 0,
        Some(Ok(WriteTarget::Topic(name))) => {
            match state.output_topics.iter().position(|topic| topic.as_bytes() == name) {
                Some(index) => index,
                None => return Ok(INVALID_WRITE),
            }
        }
        Some(Err(OptionsError::Malformed)) => return Ok(INVALID_BUFFER),
        Some(Err(OptionsError::OutOfRange)) => {
            return Err(wasmtime::format_err!(
                "failure executing host function: the topic name's length runs past the write options"
            ))
        }
    };
    let output = &mut state.output;
    let start = output.bytes.len();
    output.bytes.extend_from_slice(bytes);
    output.written.push(Written { topic, start, end: output.bytes.len() });
    Ok(len)
}

/// Records how much fuel the record that just finished used (fuel is refilled per record).
fn note_record_fuel(caller: &mut Ctx<'_>) -> wasmtime::Result<()> {
    let used = caller.data().fuel_per_record.saturating_sub(caller.get_fuel()?);
    let output = &mut caller.data_mut().output;
    output.max_record_fuel = output.max_record_fuel.max(used);
    Ok(())
}

/// The wasm type list of a signature written as letters: `i` for i32, `I` for i64.
pub(crate) fn val_types(letters: &str) -> Vec<ValType> {
    letters.chars().map(|c| if c == 'I' { ValType::I64 } else { ValType::I32 }).collect()
}
