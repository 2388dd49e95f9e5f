//! `redpanda_schema_registry` as the broker implements it (`src/v/wasm/schema_registry_module.cc`), over an
//! in-memory registry. As in the broker it is the cluster's one registry, so it outlives VM restarts and
//! is shared by every shard; registering a schema a subject already has answers its existing id and adds
//! no version; Avro and JSON schemas must be JSON (the broker's canonicalisers parse them; Protobuf is
//! not checked here); a disabled registry answers −1 to everything. Schemas are kept in their wire form
//! (`schema_def`).

use std::sync::{Arc, Mutex};

use wasmtime::Linker;

use crate::guest_memory::{self, Ctx, HasGuestMemory};
use crate::wire::Reader;

const SUCCESS: i32 = 0;
const DISABLED: i32 = -1;
const ERROR: i32 = -2;

/// The cluster's schema registry, shared by every VM of a run; `disabled()` when the cluster has none.
#[derive(Debug, Clone)]
pub struct SchemaRegistry(Option<Arc<Mutex<Registry>>>);

impl Default for SchemaRegistry {
    fn default() -> Self {
        SchemaRegistry(Some(Arc::default()))
    }
}

impl SchemaRegistry {
    pub fn disabled() -> SchemaRegistry {
        SchemaRegistry(None)
    }

    /// Runs `f` on the registry; −1 when it is disabled.
    fn with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> Result<R, i32> {
        let registry = self.0.as_ref().ok_or(DISABLED)?;
        Ok(f(&mut registry.lock().expect("the registry is never poisoned")))
    }
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Index = schema id − 1: the encoded `schema_def`.
    schemas: Vec<Vec<u8>>,
    /// Subject, version (1-based) and schema id, in registration order.
    versions: Vec<(String, i32, i32)>,
}

impl Registry {
    fn definition(&self, id: i32) -> Option<&[u8]> {
        self.schemas.get(usize::try_from(id).ok()?.checked_sub(1)?).map(Vec::as_slice)
    }

    /// `varint id, varint version, schema_def` for a subject's version (−1: latest).
    fn subject_schema(&self, subject: &str, version: i32) -> Option<Vec<u8>> {
        let (_, version, id) = self
            .versions
            .iter()
            .filter(|(name, v, _)| name == subject && (version == -1 || *v == version))
            .max_by_key(|(_, v, _)| *v)?;
        let mut out = Vec::new();
        crate::wire::put_varint(&mut out, i64::from(*id));
        crate::wire::put_varint(&mut out, i64::from(*version));
        out.extend_from_slice(self.definition(*id)?);
        Some(out)
    }

    fn create(&mut self, subject: &str, definition: Vec<u8>) -> i32 {
        let id = match self.schemas.iter().position(|known| *known == definition) {
            Some(index) => index as i32 + 1,
            None => {
                self.schemas.push(definition);
                self.schemas.len() as i32
            }
        };
        if !self.versions.iter().any(|(name, _, known)| name == subject && *known == id) {
            let version = self.versions.iter().filter(|(name, _, _)| name == subject).count() as i32 + 1;
            self.versions.push((subject.to_string(), version, id));
        }
        id
    }
}

/// Checks a `schema_def`: format 0 (Avro), 1 (Protobuf) or 2 (JSON), a schema text (JSON for Avro and
/// JSON schemas), then that many references. Returns its length: bytes after it are ignored, as the
/// broker's decoder ignores them.
fn parse_schema_def(bytes: &[u8]) -> Option<usize> {
    let mut reader = Reader::new(bytes);
    let format = reader.varint()?;
    if !(0..=2).contains(&format) {
        return None;
    }
    let text = reader.sized()??;
    if format != 1 {
        serde_json::from_slice::<serde::de::IgnoredAny>(&text).ok()?;
    }
    for _ in 0..reader.varint()? {
        reader.sized()?;
        reader.sized()?;
        reader.varint()?;
    }
    Some(reader.position())
}

fn subject<T: HasGuestMemory>(caller: &mut Ctx<'_, T>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    Ok(String::from_utf8_lossy(&guest_memory::read(caller, ptr, len)?).into_owned())
}

/// Copies `bytes` into a guest buffer of `len` bytes: the count written, or −2 if it does not fit.
fn copy_out<T: HasGuestMemory>(
    caller: &mut Ctx<'_, T>,
    bytes: Result<Option<Vec<u8>>, i32>,
    buffer: i32,
    len: i32,
) -> wasmtime::Result<i32> {
    guest_memory::check(caller, &[(buffer, len)])?;
    match bytes {
        Ok(Some(bytes)) if bytes.len() <= len as u32 as usize => {
            guest_memory::write(caller, buffer, &bytes)?;
            Ok(bytes.len() as i32)
        }
        Ok(_) => Ok(ERROR),
        Err(code) => Ok(code),
    }
}

fn write_len<T: HasGuestMemory>(
    caller: &mut Ctx<'_, T>,
    len: Result<Option<usize>, i32>,
    out: i32,
) -> wasmtime::Result<i32> {
    guest_memory::check(caller, &[(out, 4)])?;
    match len {
        Ok(Some(len)) => {
            guest_memory::write(caller, out, &(len as u32).to_le_bytes())?;
            Ok(SUCCESS)
        }
        Ok(None) => Ok(ERROR),
        Err(code) => Ok(code),
    }
}

pub(crate) fn link<T: HasGuestMemory + Send + 'static>(
    linker: &mut Linker<T>,
    registry: fn(&mut T) -> &mut SchemaRegistry,
) -> wasmtime::Result<()> {
    const MODULE: &str = "redpanda_schema_registry";
    linker.func_wrap(MODULE, "check_abi_version_0", || {})?;
    linker.func_wrap(MODULE, "get_schema_definition_len", move |mut caller: Ctx<'_, T>, id: i32, out: i32| {
        let len = registry(caller.data_mut()).with(|r| r.definition(id).map(<[u8]>::len));
        write_len(&mut caller, len, out)
    })?;
    linker.func_wrap(
        MODULE,
        "get_schema_definition",
        move |mut caller: Ctx<'_, T>, id: i32, buffer: i32, len: i32| {
            let bytes = registry(caller.data_mut()).with(|r| r.definition(id).map(<[u8]>::to_vec));
            copy_out(&mut caller, bytes, buffer, len)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "get_subject_schema_len",
        move |mut caller: Ctx<'_, T>, name: i32, name_len: i32, version: i32, out: i32| -> wasmtime::Result<i32> {
            let name = subject(&mut caller, name, name_len)?;
            let len = registry(caller.data_mut()).with(|r| r.subject_schema(&name, version).map(|bytes| bytes.len()));
            write_len(&mut caller, len, out)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "get_subject_schema",
        move |mut caller: Ctx<'_, T>,
              name: i32,
              name_len: i32,
              version: i32,
              buffer: i32,
              len: i32|
              -> wasmtime::Result<i32> {
            let name = subject(&mut caller, name, name_len)?;
            let bytes = registry(caller.data_mut()).with(|r| r.subject_schema(&name, version));
            copy_out(&mut caller, bytes, buffer, len)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "create_subject_schema",
        move |mut caller: Ctx<'_, T>,
              name: i32,
              name_len: i32,
              buffer: i32,
              len: i32,
              id_out: i32|
              -> wasmtime::Result<i32> {
            guest_memory::check(&mut caller, &[(id_out, 4)])?;
            let name = subject(&mut caller, name, name_len)?;
            let definition = guest_memory::read(&mut caller, buffer, len)?;
            let created = registry(caller.data_mut()).with(|r| {
                let len = parse_schema_def(&definition)?;
                Some(r.create(&name, definition[..len].to_vec()))
            });
            match created {
                Ok(Some(id)) => {
                    guest_memory::write(&mut caller, id_out, &id.to_le_bytes())?;
                    Ok(SUCCESS)
                }
                Ok(None) => Ok(ERROR),
                Err(code) => Ok(code),
            }
        },
    )?;
    Ok(())
}
