//! What the broker checks when a module is deployed: its own parser's rules (`src/v/wasm/parser/parser.cc`),
//! then the transform's exports and imports (`wasmtime_runtime::validate` in `wasmtime.cc`), and what it
//! deploys but then fails to run.

use wasmtime::{ExternType, Module};

/// The broker's parser reads the module's structure before wasmtime does and refuses some modules that
/// wasmtime (a newer one in the harness) accepts: a section id out of the order 1–9, 12, 10, 11 or
/// unknown (custom sections may come anywhere), a value type beyond i32, i64, f32, f64, funcref and
/// externref (v128) in a function type, global or imported global, and a global initialiser other than
/// one constant, `global.get` or `ref.null`. Code is not read.
pub(crate) fn parse_like_the_broker(binary: &[u8]) -> anyhow::Result<()> {
    let refuse = |why: String| anyhow::anyhow!("invalid WebAssembly module: {why} (the broker's deploy parser)");
    let mut reader = Bytes { bytes: binary, at: 0 };
    if reader.take(4) != Some(b"\0asm") || reader.take(4) != Some(&[1, 0, 0, 0]) {
        return Err(refuse("not a WebAssembly 1 binary".into()));
    }
    const ORDER: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 10, 11];
    let mut next_allowed = 0;
    while !reader.is_done() {
        let id = reader.byte().ok_or_else(|| refuse("truncated section".into()))?;
        let size = reader.leb().ok_or_else(|| refuse("truncated section".into()))? as usize;
        let body = reader.take(size).ok_or_else(|| refuse("truncated section".into()))?;
        if id == 0 {
            continue;
        }
        let place =
            ORDER.iter().position(|&known| known == id).ok_or_else(|| refuse(format!("unknown section id {id}")))?;
        if place < next_allowed {
            return Err(refuse(format!("section id {id} out of order")));
        }
        next_allowed = place;
        let mut section = Bytes { bytes: body, at: 0 };
        let checked = match id {
            1 => types(&mut section),
            2 => imports(&mut section),
            6 => globals(&mut section),
            _ => Ok(()),
        };
        checked.map_err(refuse)?;
    }
    Ok(())
}

struct Bytes<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Bytes<'a> {
    fn is_done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn byte(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(slice)
    }

    /// An unsigned LEB128 (signed constants are skipped with the same reader: only their length matters).
    fn leb(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn name(&mut self) -> Option<()> {
        let len = self.leb()? as usize;
        self.take(len).map(|_| ())
    }
}

const TRUNCATED: &str = "truncated section";

fn value_type(section: &mut Bytes<'_>) -> Result<(), String> {
    match section.byte().ok_or(TRUNCATED)? {
        0x7f | 0x7e | 0x7d | 0x7c | 0x70 | 0x6f => Ok(()),
        0x7b => Err("unknown valtype 0x7b (v128)".into()),
        other => Err(format!("unknown valtype {other:#04x}")),
    }
}

fn types(section: &mut Bytes<'_>) -> Result<(), String> {
    for _ in 0..section.leb().ok_or(TRUNCATED)? {
        if section.byte().ok_or(TRUNCATED)? != 0x60 {
            return Err("a type that is not a function type".into());
        }
        for _ in 0..2 {
            for _ in 0..section.leb().ok_or(TRUNCATED)? {
                value_type(section)?;
            }
        }
    }
    Ok(())
}

fn limits(section: &mut Bytes<'_>) -> Result<(), String> {
    let flags = section.byte().ok_or(TRUNCATED)?;
    section.leb().ok_or(TRUNCATED)?;
    if flags & 1 == 1 {
        section.leb().ok_or(TRUNCATED)?;
    }
    Ok(())
}

fn imports(section: &mut Bytes<'_>) -> Result<(), String> {
    for _ in 0..section.leb().ok_or(TRUNCATED)? {
        section.name().ok_or(TRUNCATED)?;
        section.name().ok_or(TRUNCATED)?;
        match section.byte().ok_or(TRUNCATED)? {
            0 => section.leb().map(|_| ()).ok_or(TRUNCATED.to_string())?,
            1 => {
                value_type(section)?;
                limits(section)?;
            }
            2 => limits(section)?,
            3 => {
                value_type(section)?;
                section.byte().ok_or(TRUNCATED)?;
            }
            kind => return Err(format!("unknown import kind {kind}")),
        }
    }
    Ok(())
}

fn globals(section: &mut Bytes<'_>) -> Result<(), String> {
    for _ in 0..section.leb().ok_or(TRUNCATED)? {
        value_type(section)?;
        section.byte().ok_or(TRUNCATED)?;
        let skipped = match section.byte().ok_or(TRUNCATED)? {
            0x23 | 0x41 | 0x42 => section.leb().map(|_| ()),
            0x43 => section.take(4).map(|_| ()),
            0x44 => section.take(8).map(|_| ()),
            0xd0 => section.byte().map(|_| ()),
            opcode => return Err(format!("unimplemented global opcode {opcode:#04x}")),
        };
        skipped.ok_or(TRUNCATED)?;
        if section.byte().ok_or(TRUNCATED)? != 0x0b {
            return Err("a global initialiser longer than one instruction".into());
        }
    }
    Ok(())
}

/// Why a module the broker deploys would never start there. A declared memory maximum: the broker
/// passes the module's limits in 64 KiB pages to its heap pool, which compares them with its heap size
/// in bytes (`wasmtime.cc`, `create_instance`), so any maximum is below the heap and creating the VM
/// fails with "unable to allocate memory within requested bounds".
pub(crate) fn never_starts(module: &Module) -> Option<String> {
    let maximum = module.exports().find_map(|export| match export.ty() {
        ExternType::Memory(memory) if export.name() == "memory" => memory.maximum(),
        _ => None,
    })?;
    Some(format!(
        "the module's memory declares a maximum ({maximum} pages): Redpanda deploys it but fails to start it \
         (\"unable to allocate memory within requested bounds\"); build it without a maximum, as Rust does by default"
    ))
}

/// The deploy-time checks of the broker (`wasmtime_runtime::validate`). Returns whether the module uses
/// the schema-registry ABI.
pub(crate) fn validate(module: &Module) -> anyhow::Result<bool> {
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
