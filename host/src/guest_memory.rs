//! Reading and writing the guest's linear memory from host functions, with the broker's bounds rules:
//! the guest's `i32` pointers and lengths are unsigned, and a range outside memory traps
//! (`ffi.cc`, "Out of bounds memory access in FFI").

use wasmtime::{Caller, Extern, Memory};

/// A store whose guest memory the host functions may touch.
pub(crate) trait HasGuestMemory {
    /// The guest's `memory` export, once the instance exists.
    fn guest_memory(&self) -> Option<Memory>;
}

pub(crate) type Ctx<'a, T> = Caller<'a, T>;

pub(crate) fn memory<T: HasGuestMemory>(caller: &mut Ctx<'_, T>) -> wasmtime::Result<Memory> {
    if let Some(memory) = caller.data().guest_memory() {
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

/// `len` bytes of guest memory at `ptr`, or the trap for a range outside it.
pub(crate) fn range(data: &[u8], ptr: i32, len: i32) -> wasmtime::Result<&[u8]> {
    let start = ptr as u32 as usize;
    data.get(start..start + len as u32 as usize).ok_or_else(out_of_bounds)
}

/// Checks that every `(ptr, len)` lies inside guest memory; the broker checks all of a call's pointer
/// arguments before it does anything else, so a bad one traps even where the call would answer an error.
pub(crate) fn check<T: HasGuestMemory>(caller: &mut Ctx<'_, T>, ranges: &[(i32, i32)]) -> wasmtime::Result<()> {
    let memory = memory(caller)?;
    let data = memory.data(&*caller);
    ranges.iter().try_for_each(|&(ptr, len)| range(data, ptr, len).map(|_| ()))
}

pub(crate) fn read<T: HasGuestMemory>(caller: &mut Ctx<'_, T>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let memory = memory(caller)?;
    Ok(range(memory.data(&*caller), ptr, len)?.to_vec())
}

pub(crate) fn write<T: HasGuestMemory>(caller: &mut Ctx<'_, T>, ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    write_all(caller, &[(ptr, bytes)])
}

/// Writes each `(ptr, bytes)` in turn, looking the memory up once.
pub(crate) fn write_all<T: HasGuestMemory>(caller: &mut Ctx<'_, T>, writes: &[(i32, &[u8])]) -> wasmtime::Result<()> {
    let memory = memory(caller)?;
    let data = memory.data_mut(&mut *caller);
    for &(ptr, bytes) in writes {
        let start = ptr as u32 as usize;
        data.get_mut(start..start + bytes.len()).ok_or_else(out_of_bounds)?.copy_from_slice(bytes);
    }
    Ok(())
}
