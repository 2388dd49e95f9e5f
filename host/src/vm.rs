//! The VM: one instance of a transform module, loaded and driven the broker's way.
//!
//! `_start` runs on a wasmtime fiber, as in the broker (`wasmtime.cc`): the guest's `read_batch_header`
//! suspends it until the host hands it a batch, and re-entering it tells the host the previous batch is
//! done. The host resumes the fiber on its own thread, so handing over a batch costs no thread switch.
//! Each import family owns its part of the VM's state and is linked through an accessor:
//! [`crate::transform_abi`], [`crate::wasi`], [`crate::schema_registry`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store, Trap};

use crate::batch::{BatchOutput, InputBatch};
use crate::clock::MonotonicClock;
use crate::guest_memory::HasGuestMemory;
use crate::logs::{LogBuffer, LogLine};
use crate::meta::TransformMeta;
use crate::schema_registry::SchemaRegistry;
use crate::transform_abi::{AbiState, GuestEvent, SharedMailbox};
use crate::wasi::WasiState;

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

/// Why a VM stopped: the broker would mark the processor `errored` and restart it.
#[derive(Debug, Clone)]
pub struct VmFailure {
    pub reason: String,
    /// Partition and offset of the record being handled, if any.
    pub record: Option<(u32, i64)>,
    /// The lines the module logged while handling the failing batch (or starting), before it failed.
    pub logs: Vec<LogLine>,
    /// The VM never started: instantiation or `main()` before its first batch failed.
    pub at_start: bool,
}

impl VmFailure {
    /// A failure of the harness's own making (not the module's): no record, no logs.
    pub fn harness(reason: String) -> VmFailure {
        VmFailure { reason, record: None, logs: Vec::new(), at_start: false }
    }
}

impl std::fmt::Display for VmFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reason)?;
        if let Some((partition, offset)) = self.record {
            write!(f, "\n  while handling partition {partition} offset {offset}")?;
        }
        if !self.logs.is_empty() {
            write!(f, "\n  last log lines of the module:")?;
            for line in &self.logs[self.logs.len().saturating_sub(LOG_TAIL)..] {
                write!(f, "\n    {}", line.text.trim_end())?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for VmFailure {}

/// How wasmtime compiles the guest and lays out its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineProfile {
    /// As the broker configures wasmtime (`wasmtime_runtime` in `wasmtime.cc`): memory without guard
    /// pages or reserve (every access is bounds-checked and growing may move it), no native unwind
    /// info, no copy-on-write images, Cranelift at speed, and only the proposals wasmtime 20 enables
    /// by default, so a module using a newer one fails to compile here as it fails there.
    Broker,
    /// wasmtime's defaults for memory: a large reservation with guard pages, which lets Cranelift drop
    /// most bounds checks. Not what the broker runs; `make bench` shows both, to price the checks.
    GuardPages,
}

impl EngineProfile {
    fn config(self, limits: Limits) -> Config {
        let mut config = Config::new();
        config.consume_fuel(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        config.max_wasm_stack(limits.stack_bytes);
        // The guest runs on a fiber: its stack holds the wasm stack and the host functions it calls.
        config.async_stack_size(limits.stack_bytes + (1 << 20));
        // Off in wasmtime 20 (tail calls from 22, extended constants from 25, the rest later); function
        // references, GC and exceptions are not compiled into this build at all.
        config
            .wasm_tail_call(false)
            .wasm_extended_const(false)
            .wasm_memory64(false)
            .wasm_custom_page_sizes(false)
            .wasm_wide_arithmetic(false)
            .wasm_stack_switching(false);
        if self == EngineProfile::Broker {
            config
                .memory_reservation(0)
                .memory_guard_size(0)
                .memory_reservation_for_growth(0)
                .native_unwind_info(false)
                .memory_init_cow(false);
        }
        config
    }
}

/// A compiled, validated module, ready to start VMs from (a restart reuses it, as the broker's cache does).
#[derive(Clone)]
pub struct TransformModule {
    engine: Engine,
    /// The linked module, or why linking fails: the broker deploys a module that imports a function it
    /// does not provide, and fails when it creates the processor (`make_factory` in `wasmtime.cc`).
    pre: Result<InstancePre<GuestState>, String>,
    limits: Limits,
    pub imports_schema_registry: bool,
    /// Why the broker would deploy this module but never start it (printed by the CLI; its VMs fail at start).
    pub warnings: Vec<String>,
}

impl TransformModule {
    /// Compiles `bytes` (a `.wasm`, or `.wat` text) for the engine the broker runs, and refuses what the
    /// broker's deploy would refuse.
    pub fn load(bytes: &[u8], limits: Limits) -> anyhow::Result<TransformModule> {
        TransformModule::load_for(bytes, limits, EngineProfile::Broker)
    }

    /// [`TransformModule::load`] for a chosen engine configuration.
    pub fn load_for(bytes: &[u8], limits: Limits, profile: EngineProfile) -> anyhow::Result<TransformModule> {
        anyhow::ensure!(
            bytes.len() <= limits.binary_bytes,
            "invalid WebAssembly module: {} bytes is over the {}-byte limit (data_transforms_binary_max_size)",
            bytes.len(),
            limits.binary_bytes
        );
        let binary = wat::parse_bytes(bytes).map_err(|e| anyhow::anyhow!("invalid WebAssembly module: {e}"))?;
        crate::deploy::parse_like_the_broker(&binary)?;
        let engine = Engine::new(&profile.config(limits))?;
        let module = Module::new(&engine, &binary).map_err(|e| anyhow::anyhow!("invalid WebAssembly module: {e}"))?;
        let imports_schema_registry = crate::deploy::validate(&module)?;
        let mut linker = Linker::new(&engine);
        crate::transform_abi::link(&mut linker, |state: &mut GuestState| (&mut state.abi, &mut state.wasi))?;
        crate::schema_registry::link(&mut linker, |state: &mut GuestState| &mut state.schema_registry)?;
        crate::wasi::link(&mut linker, |state: &mut GuestState| &mut state.wasi)?;
        let pre = match crate::deploy::never_starts(&module) {
            Some(reason) => Err(reason),
            None => linker.instantiate_pre(&module).map_err(|e| {
                format!(
                    "creating the processor failed: {e:#}; the module imports a function the broker does not provide. \
                     Redpanda deploys it, then fails to create its processor and retries every 30 s"
                )
            }),
        };
        let warnings = pre.as_ref().err().cloned().into_iter().collect();
        Ok(TransformModule { engine, pre, limits, imports_schema_registry, warnings })
    }
}

/// State of one VM, owned by its store: the memory limiter and each import family's own part.
pub(crate) struct GuestState {
    limiter: MemoryLimiter,
    /// The guest's memory export, once instantiated.
    memory: Option<wasmtime::Memory>,
    abi: AbiState,
    wasi: WasiState,
    schema_registry: SchemaRegistry,
}

impl HasGuestMemory for GuestState {
    fn guest_memory(&self) -> Option<wasmtime::Memory> {
        self.memory
    }
}

struct MemoryLimiter {
    limit: u64,
    /// The largest linear memory so far, read by the VM's owner after each batch.
    peak: Arc<AtomicU64>,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Refusing makes `memory.grow` return −1, as in the broker; the guest's allocator then aborts.
        if desired as u64 > self.limit {
            return Ok(false);
        }
        self.peak.fetch_max(desired as u64, Ordering::Relaxed);
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

/// What outlives a VM: its core's monotonic clock and the cluster's schema registry.
#[derive(Debug, Clone, Default)]
pub struct VmServices {
    pub monotonic: MonotonicClock,
    pub schema_registry: SchemaRegistry,
}

/// `_start` running on its fiber; it ends with the guest's failure and what it wrote for the failing batch.
type GuestRun = Pin<Box<dyn Future<Output = (VmFailure, BatchOutput)> + Send>>;

/// A running VM. Dropping it drops the suspended guest, as the broker does on shutdown.
pub struct Vm {
    run: GuestRun,
    mailbox: SharedMailbox,
    peak_memory: Arc<AtomicU64>,
    failed: Option<VmFailure>,
    unfinished: BatchOutput,
}

impl Vm {
    /// Instantiates the module and runs `main()` until it first waits for a batch, with a clock and a
    /// schema registry of its own. Returns the start-up output (its log lines), or the start-up failure.
    pub fn start(module: &TransformModule, meta: &TransformMeta) -> Result<(Vm, BatchOutput), VmFailure> {
        Vm::start_with(module, meta, VmServices::default())
    }

    /// [`Vm::start`] with the clock of the VMs before it on the same core and the cluster's registry.
    pub fn start_with(
        module: &TransformModule,
        meta: &TransformMeta,
        services: VmServices,
    ) -> Result<(Vm, BatchOutput), VmFailure> {
        let pre = module.pre.clone().map_err(|reason| VmFailure { at_start: true, ..VmFailure::harness(reason) })?;
        let mailbox = SharedMailbox::default();
        let env = meta.environment().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let peak_memory = Arc::new(AtomicU64::new(0));
        let state = GuestState {
            limiter: MemoryLimiter { limit: module.limits.memory_bytes, peak: peak_memory.clone() },
            memory: None,
            abi: AbiState::new(module.limits.runtime_ms * FUEL_PER_MS, meta.output_topics.clone(), mailbox.clone()),
            wasi: WasiState::new(vec![meta.name.clone()], env, services.monotonic, LogBuffer::default()),
            schema_registry: services.schema_registry,
        };
        let run = Box::pin(run_guest(module.engine.clone(), pre, module.limits, state));
        let mut vm = Vm { run, mailbox, peak_memory, failed: None, unfinished: BatchOutput::default() };
        match vm.resume() {
            Ok(GuestEvent::Ready(output)) => Ok((vm, output)),
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
            Ok(GuestEvent::BatchDone(output)) => {
                Ok(BatchOutput { peak_memory_bytes: self.peak_memory.load(Ordering::Relaxed), ..output })
            }
            Ok(GuestEvent::Ready(_)) => unreachable!("a guest is Ready once"),
            Err(failure) => {
                self.failed = Some(failure.clone());
                Err(failure)
            }
        }
    }

    /// What the guest wrote for the batch it failed in, before it failed (empty after the first call): the
    /// broker writes outputs at the VM's yields, so some of it may be in the output topic already.
    pub fn take_unfinished_output(&mut self) -> BatchOutput {
        std::mem::take(&mut self.unfinished)
    }

    /// Runs the guest until it suspends in `read_batch_header` (its event) or ends (its failure).
    fn resume(&mut self) -> Result<GuestEvent, VmFailure> {
        match self.run.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready((failure, unfinished)) => {
                self.unfinished = unfinished;
                Err(failure)
            }
            Poll::Pending => {
                let event = self.mailbox.lock().expect("the mailbox is never poisoned").event.take();
                Ok(event.expect("the guest suspends only in read_batch_header, which leaves an event"))
            }
        }
    }
}

async fn run_guest(
    engine: Engine,
    pre: InstancePre<GuestState>,
    limits: Limits,
    state: GuestState,
) -> (VmFailure, BatchOutput) {
    let fuel = limits.runtime_ms * FUEL_PER_MS;
    let mut store = Store::new(&engine, state);
    store.limiter(|state| &mut state.limiter);
    let outcome = async {
        store.set_fuel(fuel)?;
        let instance = pre.instantiate_async(&mut store).await?;
        store.data_mut().memory = instance.get_memory(&mut store, "memory");
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        store.set_fuel(fuel)?; // again before `_start`, as the broker does

        start.call_async(&mut store, ()).await
    }
    .await;
    let reason = match outcome {
        Ok(()) => "vm has exited: _start returned".to_string(),
        Err(error) => describe_trap(&error, limits),
    };
    let fuel_left = store.get_fuel().unwrap_or(0);
    let state = store.data_mut();
    let failure = VmFailure {
        reason,
        record: state.abi.current_record(),
        logs: state.wasi.take_logs().0,
        at_start: !state.abi.started(),
    };
    (failure, state.abi.take_unfinished_output(fuel_left))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a memory lives after growing by `pages`: without a reserve the broker's memory moves on
    /// every growth; guard-page memory is reserved up front and stays put.
    fn moves_when_grown(profile: EngineProfile) -> bool {
        let engine = Engine::new(&profile.config(Limits::default())).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        let memory = wasmtime::Memory::new(&mut store, wasmtime::MemoryType::new(2, None)).unwrap();
        let before = memory.data_ptr(&store);
        memory.grow(&mut store, 1).unwrap();
        memory.data_ptr(&store) != before
    }

    #[test]
    fn the_brokers_memory_has_no_reserve_for_growth() {
        assert!(moves_when_grown(EngineProfile::Broker));
        assert!(!moves_when_grown(EngineProfile::GuardPages));
    }
}
