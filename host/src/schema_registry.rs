//! `redpanda_schema_registry` as the broker implements it (`src/v/wasm/schema_registry_module.cc`), over an
//! in-memory registry. As in the broker it is the cluster's one registry, so it outlives VM restarts and
//! is shared by every shard; a disabled registry answers −1 to everything. A registration goes the way
//! `schema::registry::create_schema` (`src/v/schema/registry.cc`) sends it: the schema is made canonical
//! as the broker keeps it (modules `avro`, `json_schema` and `protobuf` below; one it refuses is −2), then
//! written as a new subject version with a new id, even where the subject has that schema already.

use std::sync::{Arc, Mutex};

use wasmtime::Linker;

use crate::guest_memory::{self, Ctx, HasGuestMemory};
use crate::wire::put_varint;
use crate::wire::BrokerReader;

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
    /// Index = schema id − 1: the `schema_def` as the broker keeps it, encoded.
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
        put_varint(&mut out, i64::from(*id));
        put_varint(&mut out, i64::from(*version));
        out.extend_from_slice(self.definition(*id)?);
        Some(out)
    }

    /// Whether every reference names a subject version the registry has (json.cc, `check_references`;
    /// protobuf.cc, `build_file_with_refs`).
    fn has_references(&self, references: &[Reference]) -> bool {
        references.iter().all(|reference| {
            let subject = String::from_utf8_lossy(&reference.subject);
            self.versions.iter().any(|(name, version, _)| *name == subject && *version == reference.version)
        })
    }

    /// Registers `definition` under `subject` as `create_schema` does: made canonical
    /// (`sharded_store::make_canonical_schema`), then written with no schema id, so `project_ids` takes the
    /// next id and `project_version` the subject's next version (the REST API's lookup of an equal schema
    /// is not on this path). `None`: the broker's −2.
    fn create(&mut self, subject: &str, definition: SchemaDef) -> Option<i32> {
        let text = match definition.format {
            Format::Avro => avro::canonical(&definition.text)?.into_bytes(),
            Format::Json => {
                self.has_references(&definition.references).then_some(())?;
                json_schema::canonical(&definition.text)?.into_bytes()
            }
            Format::Protobuf => {
                self.has_references(&definition.references).then_some(())?;
                protobuf::check(&definition.text, &definition.references)?;
                definition.text
            }
        };
        self.schemas.push(encode_schema_def(definition.format, &text, &definition.references));
        let id = self.schemas.len() as i32;
        let latest = self.versions.iter().filter(|(name, _, _)| name == subject).map(|(_, v, _)| *v).max();
        self.versions.push((subject.to_string(), latest.unwrap_or(0) + 1, id));
        Some(id)
    }
}

/// A schema's format, numbered as in a `schema_def`.
#[derive(Clone, Copy)]
enum Format {
    Avro = 0,
    Protobuf = 1,
    Json = 2,
}

/// A `schema_def` as a module sends it: format, text and references.
struct SchemaDef {
    format: Format,
    text: Vec<u8>,
    references: Vec<Reference>,
}

struct Reference {
    name: Vec<u8>,
    subject: Vec<u8>,
    version: i32,
}

/// Reads a `schema_def` as the broker does (`read_encoded_schema_def`, with `ffi::reader`: a varint cut
/// off by the end reads as its bits so far); bytes after the references are ignored. `None`: the broker
/// throws (an unknown format, a length past the end or negative, a negative reference count). The broker
/// reads references past the end as empty ones (no subject has them, so JSON and Protobuf schemas fail,
/// and Avro keeps them); the harness refuses them.
fn parse_schema_def(bytes: &[u8]) -> Option<SchemaDef> {
    let mut reader = BrokerReader::new(bytes);
    let format = match reader.varint() {
        0 => Format::Avro,
        1 => Format::Protobuf,
        2 => Format::Json,
        _ => return None,
    };
    let text = reader.sized()?.to_vec();
    let count = reader.varint();
    let mut references = Vec::new();
    for _ in 0..usize::try_from(count).ok()? {
        if reader.is_empty() {
            return None;
        }
        let name = reader.sized()?.to_vec();
        let subject = reader.sized()?.to_vec();
        references.push(Reference { name, subject, version: reader.varint() as i32 });
    }
    Some(SchemaDef { format, text, references })
}

/// A `schema_def` as the broker serves it (`write_encoded_schema_def`).
fn encode_schema_def(format: Format, text: &[u8], references: &[Reference]) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, format as i64);
    put_varint(&mut out, text.len() as i64);
    out.extend_from_slice(text);
    put_varint(&mut out, references.len() as i64);
    for reference in references {
        for bytes in [&reference.name, &reference.subject] {
            put_varint(&mut out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
        put_varint(&mut out, i64::from(reference.version));
    }
    out
}

/// Writes JSON as the broker's rapidjson `Writer` does: no whitespace, members in their order, `"` and `\`
/// escaped, control characters as `\b \t \n \f \r` or `\u00XX` (capitals), everything else as it is,
/// floats as its `Prettify` lays out their digits (`internal/dtoa.h`). The digits are the shortest that
/// read back the same; rapidjson's Grisu2 finds those for all but a few doubles.
fn compact_json(value: &serde_json::Value) -> String {
    fn write_float(out: &mut String, value: f64) {
        if value == 0.0 {
            out.push_str(if value.is_sign_negative() { "-0.0" } else { "0.0" });
            return;
        }
        if value < 0.0 {
            out.push('-');
        }
        let scientific = format!("{:e}", value.abs());
        let (mantissa, exponent) = scientific.split_once('e').expect("`{:e}` writes an exponent");
        let digits = mantissa.replace('.', "");
        let length = digits.len() as i32;
        // The value is 0.<digits> × 10^point.
        let point = exponent.parse::<i32>().expect("an integer exponent") + 1;
        let zeros = |count: i32| "0".repeat(count.max(0) as usize);
        let laid_out = if length <= point && point <= 21 {
            format!("{digits}{}.0", zeros(point - length))
        } else if 0 < point && point <= 21 {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        } else if -6 < point && point <= 0 {
            format!("0.{}{digits}", zeros(-point))
        } else if length == 1 {
            format!("{digits}e{}", point - 1)
        } else {
            format!("{}.{}e{}", &digits[..1], &digits[1..], point - 1)
        };
        out.push_str(&laid_out);
    }
    fn write_string(out: &mut String, text: &str) {
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{8}' => out.push_str("\\b"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\u{c}' => out.push_str("\\f"),
                '\r' => out.push_str("\\r"),
                c if c < ' ' => out.push_str(&format!("\\u{:04X}", u32::from(c))),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    fn write(out: &mut String, value: &serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::Null => out.push_str("null"),
            Value::Bool(true) => out.push_str("true"),
            Value::Bool(false) => out.push_str("false"),
            Value::Number(number) => match number.as_f64().filter(|_| number.is_f64()) {
                Some(float) => write_float(out, float),
                None => out.push_str(&number.to_string()),
            },
            Value::String(text) => write_string(out, text),
            Value::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    write(out, item);
                }
                out.push(']');
            }
            Value::Object(members) => {
                out.push('{');
                for (index, (key, item)) in members.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    write_string(out, key);
                    out.push(':');
                    write(out, item);
                }
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    write(&mut out, value);
    out
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
            let created = registry(caller.data_mut()).with(|r| r.create(&name, parse_schema_def(&definition)?));
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

/// Avro as `sanitize_avro_schema_definition` (`pandaproxy/schema_registry/avro.cc`) leaves it, all the
/// broker does to an Avro schema registered from a transform (no Avro parse follows on this path).
mod avro {
    use serde::Deserialize;
    use serde_json::{Map, Value};

    /// The text the broker keeps: the first JSON value of `text` (what follows it is ignored), sanitised,
    /// without whitespace. `None`: empty text, not JSON, or a name or namespace the sanitiser refuses.
    pub(super) fn canonical(text: &[u8]) -> Option<String> {
        if text.is_empty() {
            return None;
        }
        let mut schema = Value::deserialize(&mut serde_json::Deserializer::from_slice(text)).ok()?;
        sanitize(&mut schema, &mut vec![String::new()])?;
        Some(super::compact_json(&schema))
    }

    /// `namespaces`: the enclosing namespaces, innermost last (the root's is empty).
    fn sanitize(value: &mut Value, namespaces: &mut Vec<String>) -> Option<()> {
        match value {
            Value::Object(object) => {
                let depth = namespaces.len();
                let sanitized = sanitize_object(object, namespaces);
                namespaces.truncate(depth);
                sanitized
            }
            Value::Array(items) => items.iter_mut().try_for_each(|item| sanitize(item, namespaces)),
            _ => Some(()),
        }
    }

    /// A `name` (any object's) must be a non-empty string: a fullname is split into name and `namespace`,
    /// a namespace equal to the enclosing one is dropped. Then the `type` is sanitised and the attributes
    /// sorted.
    fn sanitize_object(object: &mut Map<String, Value>, namespaces: &mut Vec<String>) -> Option<()> {
        if let Some(name) = object.get_mut("name") {
            let fullname = name.as_str().filter(|name| !name.is_empty())?.to_string();
            let namespace = match fullname.rsplit_once('.') {
                Some((namespace, short)) => {
                    *name = Value::String(short.to_string());
                    Some(namespace.to_string())
                }
                None => match object.get("namespace") {
                    Some(given) => Some(given.as_str()?.to_string()),
                    None => None,
                },
            };
            match namespace {
                Some(namespace) if namespaces.last() != Some(&namespace) => {
                    match object.get_mut("namespace") {
                        Some(given) => {
                            given.as_str()?;
                            *given = Value::String(namespace.clone());
                        }
                        None => {
                            object.insert("namespace".to_string(), Value::String(namespace.clone()));
                        }
                    }
                    namespaces.push(namespace);
                }
                // rapidjson's `RemoveMember` moves the last member into the gap, as `swap_remove` does.
                _ => drop(object.swap_remove("namespace")),
            }
        }
        let Some(kind) = object.get_mut("type") else { return Some(()) };
        sanitize(kind, namespaces)?;
        match kind {
            Value::String(kind) => {
                let kind = kind.clone();
                sanitize_type(object, &kind, namespaces)
            }
            Value::Array(union) => {
                // A union's named types lose a leading dot when it is their only one.
                for member in union.iter_mut().filter(|member| member.is_string()) {
                    let name = member.as_str().filter(|name| !name.is_empty())?;
                    if name.rfind('.') == Some(0) {
                        *member = Value::String(name[1..].to_string());
                    }
                }
                sort(object, Attributes::Field);
                Some(())
            }
            Value::Object(_) => {
                sort(object, Attributes::Field);
                Some(())
            }
            _ => Some(()),
        }
    }

    /// `sanitize_avro_type`: a record needs a `fields` array, which is sanitised; an array, enum, fixed or
    /// map has every attribute sanitised; every other type only has its attributes sorted.
    fn sanitize_type(object: &mut Map<String, Value>, kind: &str, namespaces: &mut Vec<String>) -> Option<()> {
        match kind {
            "record" => {
                let sanitized = match object.get_mut("fields") {
                    Some(fields @ Value::Array(_)) => sanitize(fields, namespaces),
                    _ => None,
                };
                sort(object, Attributes::Complex);
                sanitized
            }
            "array" | "enum" | "fixed" | "map" => {
                sort(object, Attributes::Complex);
                object.values_mut().try_for_each(|value| sanitize(value, namespaces))
            }
            _ => {
                sort(object, Attributes::Field);
                Some(())
            }
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Attributes {
        /// A record, enum, array, map or fixed: `type` first.
        Complex,
        /// Anything else, a record's field among them: `name` first.
        Field,
    }

    /// Sorts attributes in the broker's order (`member_sorter`); those it does not rank go last. The
    /// broker's `std::sort` is not stable in general; here attributes of the same rank keep their order.
    fn sort(object: &mut Map<String, Value>, attributes: Attributes) {
        let rank = |key: &str| match key {
            "type" => u8::from(attributes == Attributes::Field),
            "name" => u8::from(attributes == Attributes::Complex),
            "namespace" => 2,
            "doc" => 3,
            "fields" => 4,
            "order" => 5,
            "symbols" => 6,
            "items" => 7,
            "values" => 8,
            "default" => 9,
            "size" => 10,
            "aliases" => 11,
            _ => u8::MAX,
        };
        let mut members: Vec<(String, Value)> = std::mem::take(object).into_iter().collect();
        members.sort_by_key(|(key, _)| rank(key));
        *object = members.into_iter().collect();
    }
}

/// JSON schemas as `make_canonical_json_schema` (`pandaproxy/schema_registry/json.cc`) takes them: JSON,
/// with a `$schema` naming a dialect it knows if there is one, that its dialect's metaschema accepts
/// (without `$schema`, any of drafts 2020-12, 2019-09, 7, 6 and 4). The harness checks the metaschema rules
/// all drafts share, so what it refuses every draft refuses; a rule of one draft only is not checked, nor
/// are `$ref`s (the broker rewrites them against any `$id`; here they are kept as written).
mod json_schema {
    use serde_json::Value;

    const DIALECTS: [&str; 5] = [
        "http://json-schema.org/draft-04/schema#",
        "http://json-schema.org/draft-06/schema#",
        "http://json-schema.org/draft-07/schema#",
        "https://json-schema.org/draft/2019-09/schema#",
        "https://json-schema.org/draft/2020-12/schema#",
    ];

    /// The text the broker keeps (written without whitespace); `None`: the broker's −2.
    pub(super) fn canonical(text: &[u8]) -> Option<String> {
        let schema: Value = serde_json::from_slice(text).ok()?;
        if let Some(dialect) = schema.get("$schema") {
            let dialect = dialect.as_str()?;
            // Each dialect's URI is known with or without its final '#'.
            DIALECTS.iter().find(|known| dialect == **known || Some(dialect) == known.strip_suffix('#'))?;
        }
        is_schema(&schema).then(|| super::compact_json(&schema))
    }

    /// A schema is an object or a boolean (draft 4 has no boolean schemas, the later drafts do).
    fn is_schema(value: &Value) -> bool {
        match value {
            Value::Bool(_) => true,
            Value::Object(keywords) => keywords.iter().all(|(keyword, value)| keyword_is_valid(keyword, value)),
            _ => false,
        }
    }

    /// The keywords every draft's metaschema constrains, each with what any draft allows.
    fn keyword_is_valid(keyword: &str, value: &Value) -> bool {
        let schemas =
            |value: &Value| value.as_array().is_some_and(|items| !items.is_empty() && items.iter().all(is_schema));
        match keyword {
            "type" => {
                is_simple_type(value)
                    || value
                        .as_array()
                        .is_some_and(|types| !types.is_empty() && types.iter().all(is_simple_type) && unique(types))
            }
            "properties" | "patternProperties" | "definitions" => {
                value.as_object().is_some_and(|members| members.values().all(is_schema))
            }
            "additionalProperties" | "not" => is_schema(value),
            "items" => is_schema(value) || schemas(value),
            "allOf" | "anyOf" | "oneOf" => schemas(value),
            "required" => is_string_set(value),
            "dependencies" => value.as_object().is_some_and(|members| {
                members.values().all(|dependency| is_schema(dependency) || is_string_set(dependency))
            }),
            "enum" => value.is_array(),
            "maxLength" | "minLength" | "maxItems" | "minItems" | "maxProperties" | "minProperties" => {
                value.as_f64().is_some_and(|n| n >= 0.0 && n.fract() == 0.0)
            }
            "multipleOf" => value.as_f64().is_some_and(|n| n > 0.0),
            "maximum" | "minimum" => value.is_number(),
            // A boolean in draft 4, a number later.
            "exclusiveMaximum" | "exclusiveMinimum" => value.is_number() || value.is_boolean(),
            "pattern" | "title" | "description" => value.is_string(),
            "uniqueItems" => value.is_boolean(),
            _ => true,
        }
    }

    fn is_simple_type(value: &Value) -> bool {
        matches!(value.as_str(), Some("array" | "boolean" | "integer" | "null" | "number" | "object" | "string"))
    }

    fn is_string_set(value: &Value) -> bool {
        value.as_array().is_some_and(|items| items.iter().all(Value::is_string) && unique(items))
    }

    fn unique(items: &[Value]) -> bool {
        items.iter().enumerate().all(|(index, item)| !items[..index].contains(item))
    }
}

/// Protobuf schemas: the broker builds them with protobuf's own parser and descriptor pool (`protobuf.cc`,
/// `make_canonical_protobuf_schema`) and keeps the descriptor's `DebugString`. The harness keeps the text
/// as written and checks what follows; a schema failing it is −2.
///
/// - The grammar of a `.proto` file: `syntax = "proto2" | "proto3"` or `edition = "2023"` first (none:
///   proto2), then `package` (once), `import`, `option`, `message`, `enum`, `service` and `extend`; in a
///   message, fields (with options), `map<K, V>` fields, `oneof`, nested messages and enums, `reserved`,
///   `extensions`, `option`, proto2 `group`s; comments and adjacent string literals.
/// - Labels: proto2 fields outside a oneof need one; `required` only in proto2; none inside a oneof.
/// - Field numbers 1 to 536,870,911, outside 19,000 to 19,999, none used twice or reserved in a message;
///   names unique in their scope; map keys integral, `bool` or `string`; enums not empty, their first value
///   0 in proto3 and editions, a value number used twice only with `allow_alias`.
/// - Imports: the broker's well-known files (`google/protobuf/*`, `google/type/*`, `confluent/*`) or the
///   name of one of the schema's references. In a file without imports, every type a field or rpc names
///   must be a scalar or a message or enum the file declares (its last component is compared).
///
/// Not checked: option names and values, type resolution across imports and scopes, enum value scoping,
/// extension ranges and numbers, a schema sent as a base64 `FileDescriptorProto` (refused here).
mod protobuf {
    use super::Reference;

    /// The files the broker's descriptor pool knows without a reference (`protobuf.cc`, `known_types`).
    const KNOWN_FILES: [(&str, &[&str]); 3] = [
        ("confluent/", &["meta", "types/decimal"]),
        (
            "google/type/",
            &[
                "calendar_period",
                "color",
                "date",
                "datetime",
                "dayofweek",
                "decimal",
                "expr",
                "fraction",
                "interval",
                "latlng",
                "localized_text",
                "money",
                "month",
                "phone_number",
                "postal_address",
                "quaternion",
                "timeofday",
            ],
        ),
        (
            "google/protobuf/",
            &[
                "source_context",
                "any",
                "type",
                "wrappers",
                "api",
                "duration",
                "empty",
                "field_mask",
                "struct",
                "timestamp",
                "descriptor",
            ],
        ),
    ];

    const MAP_KEYS: [&str; 12] = [
        "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64", "bool",
        "string",
    ];
    const MAX_FIELD_NUMBER: u64 = 536_870_911;

    pub(super) fn check(text: &[u8], references: &[Reference]) -> Option<()> {
        let mut parser =
            Parser { tokens: tokenize(text)?, at: 0, syntax: Syntax::Proto2, declared: Vec::new(), used: Vec::new() };
        parser.file(references)?;
        let resolved = parser.used.iter().all(|name| {
            let last = name.rsplit('.').next().unwrap_or(name);
            parser.declared.iter().any(|declared| declared == last)
        });
        resolved.then_some(())
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Token {
        Word(String),
        Number(String),
        Text(Vec<u8>),
        Symbol(u8),
    }

    /// Splits a `.proto` file into tokens, dropping whitespace and comments; `None` for an unterminated
    /// string or comment or a byte that starts no token.
    fn tokenize(text: &[u8]) -> Option<Vec<Token>> {
        let mut tokens = Vec::new();
        let mut at = 0;
        while let Some(&byte) = text.get(at) {
            let rest = &text[at..];
            if byte.is_ascii_whitespace() {
                at += 1;
            } else if rest.starts_with(b"//") {
                at += rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            } else if rest.starts_with(b"/*") {
                at += 2 + rest[2..].windows(2).position(|pair| pair == b"*/")? + 2;
            } else if byte.is_ascii_alphabetic() || byte == b'_' {
                let len = rest.iter().position(|b| !(b.is_ascii_alphanumeric() || *b == b'_')).unwrap_or(rest.len());
                tokens.push(Token::Word(String::from_utf8_lossy(&rest[..len]).into_owned()));
                at += len;
            } else if byte.is_ascii_digit() || (byte == b'.' && rest.get(1).is_some_and(u8::is_ascii_digit)) {
                let mut len = 0;
                while let Some(&b) = rest.get(len) {
                    let exponent_sign =
                        (b == b'-' || b == b'+') && matches!(rest[len - 1], b'e' | b'E') && !rest.starts_with(b"0x");
                    if !(b.is_ascii_alphanumeric() || b == b'.' || exponent_sign) {
                        break;
                    }
                    len += 1;
                }
                tokens.push(Token::Number(String::from_utf8_lossy(&rest[..len]).into_owned()));
                at += len;
            } else if byte == b'"' || byte == b'\'' {
                let mut value = Vec::new();
                let mut len = 1;
                loop {
                    match *rest.get(len)? {
                        b'\n' => return None,
                        b'\\' => {
                            value.extend_from_slice(&rest[len..len + 2.min(rest.len() - len)]);
                            len += 2;
                        }
                        b if b == byte => break,
                        b => {
                            value.push(b);
                            len += 1;
                        }
                    }
                }
                tokens.push(Token::Text(value));
                at += len + 1;
            } else if b"{}()[]<>;,=.-+:/".contains(&byte) {
                tokens.push(Token::Symbol(byte));
                at += 1;
            } else {
                return None;
            }
        }
        Some(tokens)
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Syntax {
        Proto2,
        Proto3,
        Editions,
    }

    struct Parser {
        tokens: Vec<Token>,
        at: usize,
        syntax: Syntax,
        /// Every message and enum name declared.
        declared: Vec<String>,
        /// Every type name a field, rpc or `extend` uses that is not a scalar.
        used: Vec<String>,
    }

    /// Field numbers and names of one message, and what it reserves.
    #[derive(Default)]
    struct Fields {
        numbers: Vec<u64>,
        names: Vec<String>,
        reserved: Vec<(u64, u64)>,
        reserved_names: Vec<String>,
    }

    impl Parser {
        fn peek(&self) -> Option<&Token> {
            self.tokens.get(self.at)
        }

        fn peek_word(&self) -> Option<&str> {
            match self.peek() {
                Some(Token::Word(word)) => Some(word),
                _ => None,
            }
        }

        fn next(&mut self) -> Option<Token> {
            let token = self.tokens.get(self.at)?.clone();
            self.at += 1;
            Some(token)
        }

        fn eat(&mut self, symbol: u8) -> bool {
            let found = self.peek() == Some(&Token::Symbol(symbol));
            self.at += usize::from(found);
            found
        }

        fn expect(&mut self, symbol: u8) -> Option<()> {
            self.eat(symbol).then_some(())
        }

        fn keyword(&mut self, word: &str) -> bool {
            let found = self.peek_word() == Some(word);
            self.at += usize::from(found);
            found
        }

        fn word(&mut self) -> Option<String> {
            match self.next()? {
                Token::Word(word) => Some(word),
                _ => None,
            }
        }

        /// `a.b.c`, with a leading `.` when `absolute` is allowed.
        fn full_name(&mut self, absolute: bool) -> Option<String> {
            let mut name = String::new();
            if absolute && self.eat(b'.') {
                name.push('.');
            }
            name += &self.word()?;
            while self.eat(b'.') {
                name.push('.');
                name += &self.word()?;
            }
            Some(name)
        }

        /// One or more adjacent string literals.
        fn text(&mut self) -> Option<Vec<u8>> {
            let mut value = match self.next()? {
                Token::Text(value) => value,
                _ => return None,
            };
            while let Some(Token::Text(more)) = self.peek() {
                value.extend_from_slice(more);
                self.at += 1;
            }
            Some(value)
        }

        /// A decimal, hexadecimal or octal integer.
        fn integer(&mut self) -> Option<u64> {
            let Token::Number(number) = self.next()? else { return None };
            match number.strip_prefix("0x").or_else(|| number.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None if number.len() > 1 && number.starts_with('0') => u64::from_str_radix(&number[1..], 8).ok(),
                None => number.parse().ok(),
            }
        }

        fn file(&mut self, references: &[Reference]) -> Option<()> {
            if self.keyword("syntax") {
                self.expect(b'=')?;
                self.syntax = match self.text()?.as_slice() {
                    b"proto2" => Syntax::Proto2,
                    b"proto3" => Syntax::Proto3,
                    _ => return None,
                };
                self.expect(b';')?;
            } else if self.keyword("edition") {
                self.expect(b'=')?;
                (self.text()? == b"2023").then_some(())?;
                self.syntax = Syntax::Editions;
                self.expect(b';')?;
            }
            let (mut package, mut imports, mut names) = (false, false, Vec::new());
            while self.peek().is_some() {
                if self.eat(b';') {
                    continue;
                }
                match self.word()?.as_str() {
                    "package" if !package => {
                        package = true;
                        self.full_name(false)?;
                        self.expect(b';')?;
                    }
                    "import" => {
                        let _ = self.keyword("public") || self.keyword("weak");
                        let file = self.text()?;
                        let known = KNOWN_FILES.iter().any(|(directory, names)| {
                            names.iter().any(|name| format!("{directory}{name}.proto").as_bytes() == file)
                        }) || references.iter().any(|reference| reference.name == file);
                        known.then_some(())?;
                        imports = true;
                        self.expect(b';')?;
                    }
                    "option" => self.option()?,
                    "message" => self.message(&mut names)?,
                    "enum" => self.enumeration(&mut names)?,
                    "service" => self.service(&mut names)?,
                    "extend" => self.extend()?,
                    _ => return None,
                }
            }
            // Types from imported files are not known here.
            if imports {
                self.used.clear();
            }
            Some(())
        }

        /// Declares `name` in a scope whose names are `names`; `None` if it is there already.
        fn declare(names: &mut Vec<String>, name: String) -> Option<()> {
            (!names.contains(&name)).then_some(())?;
            names.push(name);
            Some(())
        }

        /// After `option`: a name, `=`, a constant, `;`.
        fn option(&mut self) -> Option<()> {
            self.option_assignment()?;
            self.expect(b';')
        }

        /// `name = constant`; returns the name and whether the constant is `true`.
        fn option_assignment(&mut self) -> Option<(String, bool)> {
            let mut name = String::new();
            loop {
                if self.eat(b'(') {
                    name += &self.full_name(true)?;
                    self.expect(b')')?;
                } else {
                    name += &self.word()?;
                }
                if !self.eat(b'.') {
                    break;
                }
                name.push('.');
            }
            self.expect(b'=')?;
            let is_true = self.peek_word() == Some("true");
            self.constant()?;
            Some((name, is_true))
        }

        /// An identifier, a signed number, strings, or a text-format aggregate in braces.
        fn constant(&mut self) -> Option<()> {
            if self.eat(b'-') || self.eat(b'+') {
                return match self.next()? {
                    Token::Number(_) => Some(()),
                    Token::Word(word) if word == "inf" || word == "nan" => Some(()),
                    _ => None,
                };
            }
            match self.peek()? {
                Token::Number(_) => self.next().map(drop),
                Token::Text(_) => self.text().map(drop),
                Token::Word(_) => self.full_name(false).map(drop),
                Token::Symbol(b'{') => {
                    let mut depth = 0;
                    loop {
                        match self.next()? {
                            Token::Symbol(b'{') => depth += 1,
                            Token::Symbol(b'}') if depth == 1 => return Some(()),
                            Token::Symbol(b'}') => depth -= 1,
                            _ => {}
                        }
                    }
                }
                Token::Symbol(_) => None,
            }
        }

        /// `[name = constant, ...]` after a field or enum value, if there.
        fn field_options(&mut self) -> Option<()> {
            if self.eat(b'[') {
                loop {
                    self.option_assignment()?;
                    if !self.eat(b',') {
                        break;
                    }
                }
                self.expect(b']')?;
            }
            Some(())
        }

        /// After `message`.
        fn message(&mut self, names: &mut Vec<String>) -> Option<()> {
            let name = self.word()?;
            Self::declare(names, name.clone())?;
            self.declared.push(name);
            self.expect(b'{')?;
            self.message_body()
        }

        /// After a message's or group's `{`, up to and including its `}`.
        fn message_body(&mut self) -> Option<()> {
            let mut fields = Fields::default();
            let mut names = Vec::new();
            while !self.eat(b'}') {
                if self.eat(b';') {
                    continue;
                }
                const STATEMENTS: [&str; 6] = ["message", "enum", "extend", "option", "oneof", "reserved"];
                match STATEMENTS.into_iter().find(|statement| self.keyword(statement)) {
                    Some("message") => self.message(&mut names)?,
                    Some("enum") => self.enumeration(&mut names)?,
                    Some("extend") => self.extend()?,
                    Some("option") => self.option()?,
                    Some("oneof") => self.oneof(&mut fields, &mut names)?,
                    Some("reserved") => self.reserved(&mut fields)?,
                    _ if self.syntax == Syntax::Proto2 && self.keyword("extensions") => {
                        self.ranges()?;
                        self.field_options()?;
                        self.expect(b';')?;
                    }
                    _ if self.peek_word() == Some("map")
                        && self.tokens.get(self.at + 1) == Some(&Token::Symbol(b'<')) =>
                    {
                        self.at += 1;
                        self.map_field(&mut fields, &mut names)?;
                    }
                    _ => self.field(&mut fields, &mut names, false)?,
                }
            }
            let reserved = |number: &u64| fields.reserved.iter().any(|(from, to)| (from..=to).contains(&number));
            let numbers_valid = fields.numbers.iter().enumerate().all(|(index, number)| {
                (1..=MAX_FIELD_NUMBER).contains(number)
                    && !(19_000..=19_999).contains(number)
                    && !fields.numbers[..index].contains(number)
                    && !reserved(number)
            });
            let names_valid = fields.names.iter().all(|name| !fields.reserved_names.contains(name));
            (numbers_valid && names_valid).then_some(())
        }

        /// A field, from its label if any; in a oneof, fields take no label.
        fn field(&mut self, fields: &mut Fields, names: &mut Vec<String>, in_oneof: bool) -> Option<()> {
            let label = ["optional", "required", "repeated"].into_iter().find(|label| self.keyword(label));
            let label_valid = match (label, self.syntax) {
                (Some(_), _) if in_oneof => false,
                (Some("required"), syntax) => syntax == Syntax::Proto2,
                (None, Syntax::Proto2) => in_oneof,
                _ => true,
            };
            label_valid.then_some(())?;
            if self.syntax == Syntax::Proto2 && self.keyword("group") {
                let name = self.word()?;
                self.expect(b'=')?;
                fields.numbers.push(self.integer()?);
                self.field_options()?;
                self.expect(b'{')?;
                Self::declare(names, name.to_lowercase())?;
                fields.names.push(name.to_lowercase());
                self.declared.push(name);
                return self.message_body();
            }
            let kind = self.full_name(true)?;
            self.use_type(kind);
            self.field_rest(fields, names)
        }

        /// `name = number [options];` after a field's type.
        fn field_rest(&mut self, fields: &mut Fields, names: &mut Vec<String>) -> Option<()> {
            let name = self.word()?;
            self.expect(b'=')?;
            fields.numbers.push(self.integer()?);
            self.field_options()?;
            self.expect(b';')?;
            Self::declare(names, name.clone())?;
            fields.names.push(name);
            Some(())
        }

        fn use_type(&mut self, kind: String) {
            const SCALARS: [&str; 15] = [
                "double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64",
                "sfixed32", "sfixed64", "bool", "string", "bytes",
            ];
            if !SCALARS.contains(&kind.as_str()) {
                self.used.push(kind);
            }
        }

        /// After `map`: `<key, value> name = number [options];`.
        fn map_field(&mut self, fields: &mut Fields, names: &mut Vec<String>) -> Option<()> {
            self.expect(b'<')?;
            let key = self.word()?;
            MAP_KEYS.contains(&key.as_str()).then_some(())?;
            self.expect(b',')?;
            let value = self.full_name(true)?;
            self.use_type(value);
            self.expect(b'>')?;
            self.field_rest(fields, names)
        }

        /// After `oneof`: a name and at least one field.
        fn oneof(&mut self, fields: &mut Fields, names: &mut Vec<String>) -> Option<()> {
            Self::declare(names, self.word()?)?;
            self.expect(b'{')?;
            let before = fields.numbers.len();
            while !self.eat(b'}') {
                if self.keyword("option") {
                    self.option()?;
                } else if !self.eat(b';') {
                    self.field(fields, names, true)?;
                }
            }
            (fields.numbers.len() > before).then_some(())
        }

        /// After `reserved`: numbers and ranges, or names (strings, identifiers in editions).
        fn reserved(&mut self, fields: &mut Fields) -> Option<()> {
            match self.peek()? {
                Token::Number(_) => fields.reserved.extend(self.ranges()?),
                _ => loop {
                    let name = match self.syntax {
                        Syntax::Editions => self.word()?,
                        _ => String::from_utf8_lossy(&self.text()?).into_owned(),
                    };
                    fields.reserved_names.push(name);
                    if !self.eat(b',') {
                        break;
                    }
                },
            }
            self.expect(b';')
        }

        /// `n`, `n to m` or `n to max`, separated by commas.
        fn ranges(&mut self) -> Option<Vec<(u64, u64)>> {
            let mut ranges = Vec::new();
            loop {
                let from = self.integer()?;
                let to = match self.keyword("to") {
                    true if self.keyword("max") => MAX_FIELD_NUMBER,
                    true => self.integer()?,
                    false => from,
                };
                (from <= to).then_some(())?;
                ranges.push((from, to));
                if !self.eat(b',') {
                    return Some(ranges);
                }
            }
        }

        /// After `enum`: a name and at least one value.
        fn enumeration(&mut self, names: &mut Vec<String>) -> Option<()> {
            let name = self.word()?;
            Self::declare(names, name.clone())?;
            self.declared.push(name);
            self.expect(b'{')?;
            let (mut values, mut allow_alias) = (Vec::new(), false);
            while !self.eat(b'}') {
                if self.eat(b';') {
                    continue;
                }
                if self.keyword("option") {
                    let (name, is_true) = self.option_assignment()?;
                    allow_alias |= name == "allow_alias" && is_true;
                    self.expect(b';')?;
                } else if self.keyword("reserved") {
                    self.reserved(&mut Fields::default())?;
                } else {
                    self.word()?;
                    self.expect(b'=')?;
                    let negative = self.eat(b'-');
                    let magnitude = i64::try_from(self.integer()?).ok()?;
                    let value = i32::try_from(if negative { -magnitude } else { magnitude }).ok()?;
                    self.field_options()?;
                    self.expect(b';')?;
                    values.push(value);
                }
            }
            let open = self.syntax != Syntax::Proto2;
            let first_valid = values.first().is_some_and(|&first| !open || first == 0);
            let unique =
                allow_alias || values.iter().enumerate().all(|(index, value)| !values[..index].contains(value));
            (first_valid && unique).then_some(())
        }

        /// After `service`: a name and rpcs.
        fn service(&mut self, names: &mut Vec<String>) -> Option<()> {
            Self::declare(names, self.word()?)?;
            self.expect(b'{')?;
            while !self.eat(b'}') {
                if self.keyword("option") {
                    self.option()?;
                } else if !self.eat(b';') {
                    self.rpc()?;
                }
            }
            Some(())
        }

        /// `rpc Name (stream Request) returns (stream Response)`, then `;` or a block of options.
        fn rpc(&mut self) -> Option<()> {
            self.keyword("rpc").then_some(())?;
            self.word()?;
            self.rpc_type()?;
            self.keyword("returns").then_some(())?;
            self.rpc_type()?;
            if !self.eat(b'{') {
                return self.expect(b';');
            }
            while !self.eat(b'}') {
                if !self.eat(b';') {
                    self.keyword("option").then_some(())?;
                    self.option()?;
                }
            }
            Some(())
        }

        fn rpc_type(&mut self) -> Option<()> {
            self.expect(b'(')?;
            self.keyword("stream");
            let kind = self.full_name(true)?;
            self.used.push(kind);
            self.expect(b')')
        }

        /// After `extend`: the extended message's name and fields.
        fn extend(&mut self) -> Option<()> {
            let kind = self.full_name(true)?;
            self.used.push(kind);
            self.expect(b'{')?;
            let (mut fields, mut names) = (Fields::default(), Vec::new());
            while !self.eat(b'}') {
                if !self.eat(b';') {
                    self.field(&mut fields, &mut names, false)?;
                }
            }
            Some(())
        }
    }
}
