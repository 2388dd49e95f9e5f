//! `wasi_snapshot_preview1` as the broker implements it (`src/v/wasm/wasi.cc`): argv is the transform
//! name, the environment comes in an order of its own (see [`environment_order`]), the wall clock is the
//! current record's timestamp, the monotonic clock reads 0, then 1 ms more per read, random bytes are all
//! 9, each write to stdout or stderr is a log line (kept by the rules of [`crate::logs`]), `proc_exit`
//! traps, the rest is ENOSYS. Pointers are checked as the broker checks them: a bad one traps, but in
//! `args_get` and `environ_get`, which answer INVAL.

use wasmtime::{FuncType, Linker, Val, ValType};

use crate::clock::MonotonicClock;
use crate::guest_memory::{self, Ctx, HasGuestMemory};
use crate::logs::{DroppedLines, LogBuffer, LogLevel, LogLine, LINE_MAX_BYTES};

const SUCCESS: i32 = 0;
const BADF: i32 = 8;
/// The broker's `ERRNO_INVAL` (`wasi.h`) is 16, though WASI's EINVAL is 28 (16 is EDEADLK): a module sees 16.
const INVAL: i32 = 16;
const NOSYS: i32 = 52;

const MODULE: &str = "wasi_snapshot_preview1";

/// The guest called `proc_exit`: the VM stops, as on a trap, but the module meant it.
#[derive(Debug)]
pub(crate) struct ProcExit(pub(crate) i32);

impl std::fmt::Display for ProcExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the module exited with status {} (proc_exit)", self.0)
    }
}

impl std::error::Error for ProcExit {}

/// Every other function the broker defines, with its parameters (`i` i32, `I` i64); all return ENOSYS.
/// Not listed and so not linked, as in the broker: `fd_fdstat_set_rights`, `proc_raise`.
const UNSUPPORTED: [(&str, &str); 32] = [
    ("fd_advise", "iIIi"),
    ("fd_allocate", "iII"),
    ("fd_close", "i"),
    ("fd_datasync", "i"),
    ("fd_fdstat_get", "ii"),
    ("fd_fdstat_set_flags", "ii"),
    ("fd_filestat_get", "ii"),
    ("fd_filestat_set_size", "iI"),
    ("fd_filestat_set_times", "iIIi"),
    ("fd_pread", "iiiIi"),
    ("fd_prestat_dir_name", "iii"),
    ("fd_pwrite", "iiiIi"),
    ("fd_read", "iiii"),
    ("fd_readdir", "iiiIi"),
    ("fd_renumber", "ii"),
    ("fd_seek", "iIii"),
    ("fd_sync", "i"),
    ("fd_tell", "ii"),
    ("path_create_directory", "iii"),
    ("path_filestat_get", "iiiii"),
    ("path_filestat_set_times", "iiiiIIi"),
    ("path_link", "iiiiiii"),
    ("path_open", "iiiiiIIii"),
    ("path_readlink", "iiiiii"),
    ("path_remove_directory", "iii"),
    ("path_rename", "iiiiii"),
    ("path_symlink", "iiiii"),
    ("path_unlink_file", "iii"),
    ("sock_accept", "iii"),
    ("sock_recv", "iiiiii"),
    ("sock_send", "iiiii"),
    ("sock_shutdown", "ii"),
];

/// The WASI part of a VM's state.
pub(crate) struct WasiState {
    args: Vec<String>,
    env: Vec<String>,
    /// Milliseconds: the current record's timestamp (0 before the first batch).
    wall_clock_ms: i64,
    monotonic: MonotonicClock,
    logs: LogBuffer,
}

impl WasiState {
    /// `env` holds `NAME=value` entries; the module sees them in [`environment_order`].
    pub(crate) fn new(
        args: Vec<String>,
        mut env: Vec<String>,
        monotonic: MonotonicClock,
        logs: LogBuffer,
    ) -> WasiState {
        env.sort_by_cached_key(|entry| environment_order(entry.split('=').next().unwrap_or_default()));
        WasiState { args, env, wall_clock_ms: 0, monotonic, logs }
    }

    /// The transform ABI sets the wall clock to the timestamp of the record being handled.
    pub(crate) fn set_wall_clock_ms(&mut self, ms: i64) {
        self.wall_clock_ms = ms;
    }

    /// The log lines kept, and those dropped, since the last call.
    pub(crate) fn take_logs(&mut self) -> (Vec<LogLine>, DroppedLines) {
        self.logs.take()
    }
}

/// Where a variable comes in the environment. The broker's environment is a hash map (`wasi.h`,
/// `environ_map_t`, filled by `make_environment_vars` in `wasmtime.cc`), so its order follows neither the
/// declaration nor the insertion; the harness orders by a fixed hash of the name, an order of the same kind
/// that is the same on every run, so a module that depends on the order fails here too.
fn environment_order(name: &str) -> u64 {
    // FNV-1a, then MurmurHash3's finaliser so that names differing in their last character scatter.
    let hash = name
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
    let hash = (hash ^ (hash >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    let hash = (hash ^ (hash >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// Writes NUL-terminated strings and their pointer table, as `args_get` and `environ_get` do; a table or
/// buffer outside guest memory is INVAL there, not a trap.
fn write_string_table<T: HasGuestMemory>(
    caller: &mut Ctx<'_, T>,
    strings: &[String],
    pointers: i32,
    buffer: i32,
) -> wasmtime::Result<i32> {
    let bytes: usize = strings.iter().map(|s| s.len() + 1).sum();
    let ranges = [(pointers, 4 * strings.len() as i32), (buffer, bytes as i32)];
    if guest_memory::check(caller, &ranges).is_err() {
        return Ok(INVAL);
    }
    let mut at = buffer as u32;
    for (index, text) in strings.iter().enumerate() {
        guest_memory::write(caller, pointers.wrapping_add(4 * index as i32), &at.to_le_bytes())?;
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(0);
        guest_memory::write(caller, at as i32, &bytes)?;
        at += bytes.len() as u32;
    }
    Ok(SUCCESS)
}

fn write_table_sizes<T: HasGuestMemory>(
    caller: &mut Ctx<'_, T>,
    strings: &[String],
    count: i32,
    size: i32,
) -> wasmtime::Result<i32> {
    let bytes: usize = strings.iter().map(|s| s.len() + 1).sum();
    guest_memory::write(caller, count, &(strings.len() as u32).to_le_bytes())?;
    guest_memory::write(caller, size, &(bytes as u32).to_le_bytes())?;
    Ok(SUCCESS)
}

pub(crate) fn link<T: HasGuestMemory + Send + 'static>(
    linker: &mut Linker<T>,
    state: fn(&mut T) -> &mut WasiState,
) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "args_sizes_get", move |mut caller: Ctx<'_, T>, count: i32, size: i32| {
        let args = state(caller.data_mut()).args.clone();
        write_table_sizes(&mut caller, &args, count, size)
    })?;
    linker.func_wrap(MODULE, "args_get", move |mut caller: Ctx<'_, T>, pointers: i32, buffer: i32| {
        let args = state(caller.data_mut()).args.clone();
        write_string_table(&mut caller, &args, pointers, buffer)
    })?;
    linker.func_wrap(MODULE, "environ_sizes_get", move |mut caller: Ctx<'_, T>, count: i32, size: i32| {
        let env = state(caller.data_mut()).env.clone();
        write_table_sizes(&mut caller, &env, count, size)
    })?;
    linker.func_wrap(MODULE, "environ_get", move |mut caller: Ctx<'_, T>, pointers: i32, buffer: i32| {
        let env = state(caller.data_mut()).env.clone();
        write_string_table(&mut caller, &env, pointers, buffer)
    })?;
    linker.func_wrap(
        MODULE,
        "clock_res_get",
        |mut caller: Ctx<'_, T>, id: i32, out: i32| -> wasmtime::Result<i32> {
            guest_memory::check(&mut caller, &[(out, 8)])?;
            if !(0..=3).contains(&id) {
                return Ok(INVAL);
            }
            guest_memory::write(&mut caller, out, &1_000_000u64.to_le_bytes())?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        move |mut caller: Ctx<'_, T>, id: i32, _precision: i64, out: i32| -> wasmtime::Result<i32> {
            guest_memory::check(&mut caller, &[(out, 8)])?;
            let wasi = state(caller.data_mut());
            let nanos = match id {
                0 => (wasi.wall_clock_ms as u64).wrapping_mul(1_000_000),
                1..=3 => wasi.monotonic.read(),
                _ => return Ok(INVAL),
            };
            guest_memory::write(&mut caller, out, &nanos.to_le_bytes())?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_write",
        move |mut caller: Ctx<'_, T>, fd: i32, iovecs: i32, count: i32, written: i32| -> wasmtime::Result<i32> {
            let table = guest_memory::read(&mut caller, iovecs, count.wrapping_mul(8))?;
            guest_memory::check(&mut caller, &[(written, 4)])?;
            let level = match fd {
                1 => LogLevel::Info,
                2 => LogLevel::Warn,
                _ => return Ok(NOSYS),
            };
            // The line is cut at LINE_MAX_BYTES, so no more is copied; every buffer must lie in memory.
            let memory = guest_memory::memory(&mut caller)?;
            let data = memory.data(&caller);
            let (mut text, mut total) = (Vec::new(), 0u32);
            for iovec in table.chunks_exact(8) {
                let ptr = i32::from_le_bytes(iovec[0..4].try_into().expect("4 bytes"));
                let len = i32::from_le_bytes(iovec[4..8].try_into().expect("4 bytes"));
                let bytes = guest_memory::range(data, ptr, len)?;
                let room = (LINE_MAX_BYTES + 1).saturating_sub(text.len()).min(bytes.len());
                text.extend_from_slice(&bytes[..room]);
                total = total.wrapping_add(len as u32);
            }
            guest_memory::write(&mut caller, written, &total.to_le_bytes())?;
            state(caller.data_mut()).logs.write(level, &text);
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_get",
        |_: Ctx<'_, T>, fd: i32, _out: i32| if (0..=2).contains(&fd) { NOSYS } else { BADF },
    )?;
    linker.func_wrap(
        MODULE,
        "poll_oneoff",
        |mut caller: Ctx<'_, T>, subscriptions: i32, events: i32, count: i32, written: i32| -> wasmtime::Result<i32> {
            const SUBSCRIPTION_BYTES: i32 = 48;
            const EVENT_BYTES: i32 = 32;
            let table = guest_memory::read(&mut caller, subscriptions, count.wrapping_mul(SUBSCRIPTION_BYTES))?;
            let mut out = Vec::new();
            for subscription in table.chunks_exact(SUBSCRIPTION_BYTES as usize) {
                let tag = subscription[8];
                // Clocks fire at once (no real sleep); fd reads and writes are not supported.
                let error: u16 = match tag {
                    0 => 0,
                    1 | 2 => NOSYS as u16,
                    _ => return Ok(NOSYS),
                };
                let mut event = [0u8; EVENT_BYTES as usize];
                event[0..8].copy_from_slice(&subscription[0..8]);
                event[8..10].copy_from_slice(&error.to_le_bytes());
                event[10] = tag;
                out.extend_from_slice(&event);
            }
            guest_memory::write(&mut caller, events, &out)?;
            guest_memory::write(&mut caller, written, &(count as u32).to_le_bytes())?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "random_get",
        |mut caller: Ctx<'_, T>, buffer: i32, len: i32| -> wasmtime::Result<i32> {
            guest_memory::check(&mut caller, &[(buffer, len)])?;
            guest_memory::write(&mut caller, buffer, &vec![9u8; len as u32 as usize])?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(MODULE, "proc_exit", |_: Ctx<'_, T>, code: i32| -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(ProcExit(code)))
    })?;
    linker.func_wrap(MODULE, "sched_yield", || SUCCESS)?;
    for (name, params) in UNSUPPORTED {
        let ty = FuncType::new(linker.engine(), val_types(params), val_types("i"));
        linker.func_new(MODULE, name, ty, |_, _, results: &mut [Val]| {
            results[0] = Val::I32(NOSYS);
            Ok(())
        })?;
    }
    Ok(())
}

/// The wasm type list of a signature written as letters: `i` for i32, `I` for i64.
fn val_types(letters: &str) -> Vec<ValType> {
    letters.chars().map(|c| if c == 'I' { ValType::I64 } else { ValType::I32 }).collect()
}
