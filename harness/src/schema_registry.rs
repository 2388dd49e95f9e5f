//! `redpanda_schema_registry`: an in-memory registry behind the broker's host functions, so modules that
//! use the SR client load and work. Schemas are kept in their wire form (`schema_def`).

use wasmtime::Linker;

use crate::host::{read_guest, write_guest, GuestState};
use crate::wire::Reader;

const SUCCESS: i32 = 0;
const ERROR: i32 = -2;

#[derive(Default)]
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
        let version = self.versions.iter().filter(|(name, _, _)| name == subject).count() as i32 + 1;
        self.versions.push((subject.to_string(), version, id));
        id
    }
}

/// Checks the shape of a `schema_def`: format 0..=2, a sized schema text, then that many references.
fn parse_schema_def(bytes: &[u8]) -> Option<()> {
    let mut reader = Reader::new(bytes);
    if !(0..=2).contains(&reader.varint()?) {
        return None;
    }
    reader.sized()?;
    for _ in 0..reader.varint()? {
        reader.sized()?;
        reader.sized()?;
        reader.varint()?;
    }
    reader.at_end().then_some(())
}

type Ctx<'a> = wasmtime::Caller<'a, GuestState>;

fn subject(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    Ok(String::from_utf8_lossy(&read_guest(caller, ptr, len)?).into_owned())
}

/// Copies `bytes` into a guest buffer of `len` bytes: the count written, or −2 if it does not fit.
fn copy_out(caller: &mut Ctx<'_>, bytes: Option<Vec<u8>>, buffer: i32, len: i32) -> wasmtime::Result<i32> {
    match bytes {
        Some(bytes) if bytes.len() <= len as u32 as usize => {
            write_guest(caller, buffer, &bytes)?;
            Ok(bytes.len() as i32)
        }
        _ => Ok(ERROR),
    }
}

fn write_len(caller: &mut Ctx<'_>, bytes: Option<usize>, out: i32) -> wasmtime::Result<i32> {
    match bytes {
        Some(len) => {
            write_guest(caller, out, &(len as u32).to_le_bytes())?;
            Ok(SUCCESS)
        }
        None => Ok(ERROR),
    }
}

pub(crate) fn link(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    const MODULE: &str = "redpanda_schema_registry";
    linker.func_wrap(MODULE, "check_abi_version_0", || {})?;
    linker.func_wrap(MODULE, "get_schema_definition_len", |mut caller: Ctx<'_>, id: i32, out: i32| {
        let len = caller.data().schema_registry.definition(id).map(<[u8]>::len);
        write_len(&mut caller, len, out)
    })?;
    linker.func_wrap(MODULE, "get_schema_definition", |mut caller: Ctx<'_>, id: i32, buffer: i32, len: i32| {
        let bytes = caller.data().schema_registry.definition(id).map(<[u8]>::to_vec);
        copy_out(&mut caller, bytes, buffer, len)
    })?;
    linker.func_wrap(
        MODULE,
        "get_subject_schema_len",
        |mut caller: Ctx<'_>, name: i32, name_len: i32, version: i32, out: i32| -> wasmtime::Result<i32> {
            let name = subject(&mut caller, name, name_len)?;
            let len = caller.data().schema_registry.subject_schema(&name, version).map(|bytes| bytes.len());
            write_len(&mut caller, len, out)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "get_subject_schema",
        |mut caller: Ctx<'_>, name: i32, name_len: i32, version: i32, buffer: i32, len: i32| -> wasmtime::Result<i32> {
            let name = subject(&mut caller, name, name_len)?;
            let bytes = caller.data().schema_registry.subject_schema(&name, version);
            copy_out(&mut caller, bytes, buffer, len)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "create_subject_schema",
        |mut caller: Ctx<'_>, name: i32, name_len: i32, buffer: i32, len: i32, id_out: i32| -> wasmtime::Result<i32> {
            let name = subject(&mut caller, name, name_len)?;
            let definition = read_guest(&mut caller, buffer, len)?;
            if parse_schema_def(&definition).is_none() {
                return Ok(ERROR);
            }
            let id = caller.data_mut().schema_registry.create(&name, definition);
            write_guest(&mut caller, id_out, &id.to_le_bytes())?;
            Ok(SUCCESS)
        },
    )?;
    Ok(())
}
