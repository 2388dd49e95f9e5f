//! The schema registry functions (`redpanda_schema_registry`) as the broker implements them
//! (`wasm/schema_registry_module.cc`, `schema/registry.cc`).

mod common;

use common::*;
use transform_host::schema_registry::SchemaRegistry;
use transform_host::{Limits, Vm, VmServices};

#[test]
fn the_schema_registry_stub_stores_and_serves_schemas() {
    let imports = r#"
      (import "redpanda_schema_registry" "check_abi_version_0" (func $sr_check))
      (import "redpanda_schema_registry" "create_subject_schema" (func $create (param i32 i32 i32 i32 i32) (result i32)))
      (import "redpanda_schema_registry" "get_schema_definition_len" (func $def_len (param i32 i32) (result i32)))
      (import "redpanda_schema_registry" "get_subject_schema" (func $subject_schema (param i32 i32 i32 i32 i32) (result i32)))"#;
    // subject "s" at 256; schema_def at 260: JSON (2), sized "{}", no references.
    let extra = format!("{imports} {}", data(&[b's', 0, 0, 0, 4, 4, b'{', b'}', 0]));
    let action = "(drop (call $create (i32.const 256) (i32.const 1) (i32.const 260) (i32.const 5) (i32.const 300)))
        (drop (call $def_len (i32.load (i32.const 300)) (i32.const 304)))
        ;; id | definition length << 16 | bytes of the latest subject schema << 32
        (i64.or (i64.or (i64.load32_u (i32.const 300)) (i64.shl (i64.load32_u (i32.const 304)) (i64.const 16)))
                (i64.shl (i64.extend_i32_u (call $subject_schema (i32.const 256) (i32.const 1) (i32.const -1) (i32.const 400) (i32.const 64))) (i64.const 32)))";
    let value = result_with_extra(&extra, action);
    assert_eq!(value & 0xffff, 1, "first schema id");
    assert_eq!((value >> 16) & 0xffff, 5, "definition length");
    assert_eq!(value >> 32, 7, "varint id, varint version, then the 5-byte definition");
}

const SCHEMA_REGISTRY_IMPORTS: &str = r#"
  (import "redpanda_schema_registry" "check_abi_version_0" (func $sr_check))
  (import "redpanda_schema_registry" "create_subject_schema" (func $create (param i32 i32 i32 i32 i32) (result i32)))
  (import "redpanda_schema_registry" "get_schema_definition_len" (func $def_len (param i32 i32) (result i32)))
  (import "redpanda_schema_registry" "get_schema_definition" (func $def (param i32 i32 i32) (result i32)))
  (import "redpanda_schema_registry" "get_subject_schema_len" (func $subject_schema_len (param i32 i32 i32 i32) (result i32)))
  (import "redpanda_schema_registry" "get_subject_schema" (func $subject_schema (param i32 i32 i32 i32 i32) (result i32)))"#;

/// Subject "s" at 256, then `schema_def`s (zigzag format, sized text, no references): JSON `{}` at 260 and
/// Avro `[]` at 266 (5 bytes each; the broker only sanitises Avro here, so an empty union passes), Avro
/// `not` at 272 and JSON `not` at 280 (6 bytes each).
fn registry_guest(exprs: &[&str]) -> String {
    let mut bytes = vec![0u8; 30];
    bytes[0] = b's';
    bytes[4..9].copy_from_slice(&[4, 4, b'{', b'}', 0]);
    bytes[10..15].copy_from_slice(&[0, 4, b'[', b']', 0]);
    bytes[16..22].copy_from_slice(&[0, 6, b'n', b'o', b't', 0]);
    bytes[24..30].copy_from_slice(&[4, 6, b'n', b'o', b't', 0]);
    guest("", &report(exprs), &format!("{SCHEMA_REGISTRY_IMPORTS} {}", data(&bytes)))
}

/// Registers the schema_def at `at` (`len` bytes) under "s"; the id goes to `id_out`.
fn create(at: u32, len: u32, id_out: u32) -> String {
    format!("(call $create (i32.const 256) (i32.const 1) (i32.const {at}) (i32.const {len}) (i32.const {id_out}))")
}

/// Reads version `version` (−1: latest) of "s" into 400..464: varint id, varint version, schema_def.
fn subject_schema(version: i32) -> String {
    format!("(call $subject_schema (i32.const 256) (i32.const 1) (i32.const {version}) (i32.const 400) (i32.const 64))")
}

/// Runs a registry guest over one record with `registry` as the cluster's schema registry.
fn registry_run(wat: &str, registry: SchemaRegistry) -> Vec<i32> {
    let module = load(wat, Limits::default()).unwrap();
    let services = VmServices { schema_registry: registry, ..Default::default() };
    let (mut vm, _) = Vm::start_with(&module, &meta(), services).unwrap();
    reported(&vm.transform(batch(&[0])).unwrap())
}

/// A transform registers through `schema::registry::create_schema` (schema/registry.cc), which writes the
/// subject version with no schema id: `sharded_store::project_ids` then takes the next id, and
/// `store::project_version` the subject's next version, even for a schema the subject already has (the
/// REST API looks the schema up first; this path does not).
#[test]
fn registering_the_same_schema_twice_gives_a_new_id_and_a_new_version() {
    let (json_object, latest, version_1) = (create(260, 5, 300), subject_schema(-1), subject_schema(1));
    let exprs = [
        json_object.as_str(),
        &create(260, 5, 304),
        "(i32.load (i32.const 300))",
        "(i32.load (i32.const 304))",
        &latest,
        "(i32.load8_u (i32.const 400))",
        "(i32.load8_u (i32.const 401))",
        &version_1,
        "(i32.load8_u (i32.const 400))",
        "(call $def_len (i32.const 1) (i32.const 308))",
        "(call $def_len (i32.const 2) (i32.const 312))",
        "(i32.load (i32.const 312))",
    ];
    let values = registry_run(&registry_guest(&exprs), SchemaRegistry::default());
    // The latest is 7 bytes: id 2 and version 2 (zigzag 4 each), then the 5-byte schema_def; version 1 is id 1.
    assert_eq!(values, [0, 0, 1, 2, 7, 4, 4, 7, 2, 0, 0, 5]);
}

/// Regression (trailing_schema_bytes_were_refused): the broker's decoder ignores bytes after a schema_def's
/// references, so a definition with a trailing byte registers, and is served without it.
#[test]
fn bytes_after_a_schema_definition_are_ignored() {
    let exprs = [create(260, 6, 300), create(260, 5, 304), "(i32.load (i32.const 304))".into(), subject_schema(1)];
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    let values = registry_run(&registry_guest(&exprs), SchemaRegistry::default());
    assert_eq!(values, [0, 0, 2, 7], "version 1 served as 7 bytes (the 5-byte definition)");
}

/// A different schema under the same subject is its next version, with a new id (schema_registry_module.cc).
#[test]
fn a_second_schema_under_a_subject_is_version_2() {
    let (latest, version_1) = (subject_schema(-1), subject_schema(1));
    let exprs = [
        create(260, 5, 300),
        create(266, 5, 304),
        "(i32.load (i32.const 300))".into(),
        "(i32.load (i32.const 304))".into(),
        latest,
        "(i32.load8_u (i32.const 400))".into(),
        "(i32.load8_u (i32.const 401))".into(),
        "(i32.load8_u (i32.const 404))".into(),
        version_1,
        "(i32.load8_u (i32.const 400))".into(),
        "(i32.load8_u (i32.const 401))".into(),
        "(i32.load8_u (i32.const 404))".into(),
    ];
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    let values = registry_run(&registry_guest(&exprs), SchemaRegistry::default());
    // Latest: id 2, version 2 (zigzag 4), text "[]"; version 1: id 1, version 1 (zigzag 2), text "{}".
    assert_eq!(values, [0, 0, 1, 2, 7, 4, 4, i32::from(b'['), 7, 2, 2, i32::from(b'{')]);
}

/// The broker parses Avro and JSON schemas when registered: text that is not JSON is −2 (schema_registry_module.cc).
#[test]
fn an_avro_or_json_schema_that_is_not_json_gets_minus_2() {
    let exprs = [
        create(272, 6, 300),
        create(280, 6, 300),
        "(call $subject_schema_len (i32.const 256) (i32.const 1) (i32.const -1) (i32.const 304))".into(),
        create(260, 5, 300),
        "(i32.load (i32.const 300))".into(),
    ];
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    let values = registry_run(&registry_guest(&exprs), SchemaRegistry::default());
    assert_eq!(values, [-2, -2, -2, 0, 1], "Avro, JSON, nothing registered, then valid JSON gets the first id");
}

/// A `schema_def` in wire form: zigzag format (0 Avro, 1 Protobuf, 2 JSON), sized text, no references.
fn schema_def(format: i64, text: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    transform_host::wire::put_varint(&mut bytes, format);
    transform_host::wire::put_varint(&mut bytes, text.len() as i64);
    bytes.extend_from_slice(text.as_bytes());
    transform_host::wire::put_varint(&mut bytes, 0);
    bytes
}

/// Registers each (format, text) under "s" in turn: each call's answer (the id, or the error), and the
/// definition each new id serves (`get_schema_definition`), as `schema_def` bytes.
fn register(schemas: &[(i64, &str)]) -> (Vec<i32>, Vec<Vec<u8>>) {
    // `$register` creates, then writes what the new id serves as a record of its own (payload at 12288:
    // null key, a two-byte value length, the definition read into 8192, no headers).
    let helpers = r#"
      (func $emit (param $ptr i32) (param $len i32)
        (i32.store8 (i32.const 12288) (i32.const 1))
        (i32.store8 (i32.const 12289)
                    (i32.or (i32.and (i32.shl (local.get $len) (i32.const 1)) (i32.const 127)) (i32.const 128)))
        (i32.store8 (i32.const 12290) (i32.shr_u (local.get $len) (i32.const 6)))
        (memory.copy (i32.const 12291) (local.get $ptr) (local.get $len))
        (i32.store8 (i32.add (i32.const 12291) (local.get $len)) (i32.const 0))
        (drop (call $write_record (i32.const 12288) (i32.add (local.get $len) (i32.const 4)))))
      (func $register (param $at i32) (param $len i32) (result i32) (local $code i32)
        (local.set $code (call $create (i32.const 256) (i32.const 1) (local.get $at) (local.get $len) (i32.const 300)))
        (if (result i32) (local.get $code) (then (local.get $code))
          (else (call $emit (i32.const 8192) (call $def (i32.load (i32.const 300)) (i32.const 8192) (i32.const 4096)))
                (i32.load (i32.const 300)))))"#;
    const AT: usize = 70_000;
    let mut bytes = Vec::new();
    let mut calls = Vec::new();
    for (format, text) in schemas {
        let def = schema_def(*format, text);
        calls.push(format!("(call $register (i32.const {}) (i32.const {}))", AT + bytes.len(), def.len()));
        bytes.extend(def);
    }
    let calls: Vec<&str> = calls.iter().map(String::as_str).collect();
    let extra = format!("{SCHEMA_REGISTRY_IMPORTS} {helpers} {} {}", data(b"s"), data_at(AT as u32, &bytes));
    let output = output(&report(&calls), &extra);
    let mut values: Vec<Vec<u8>> =
        output.records().map(|(_, payload)| payload.value.expect("a value").to_vec()).collect();
    values.pop(); // the loop's own record
    let report = values.pop().expect("the report");
    (report.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect(), values)
}

/// The broker keeps an Avro schema as `sanitize_avro_schema_definition` leaves it (avro.cc): the first
/// JSON value (what follows is ignored), written without whitespace; a fullname split into name and
/// namespace, a namespace equal to the enclosing one dropped; attributes in its order (`member_sorter`:
/// `type` first in records, enums, arrays, maps and fixed, `name` first elsewhere). It checks names, a
/// record's `fields` and namespaces, and nothing else of Avro: an unknown type passes.
#[test]
fn avro_schemas_are_stored_as_the_broker_sanitises_them() {
    let record = r#" {"fields": [{"type": {"symbols": ["A"], "name": "ns.E", "type": "enum"}, "name": "e"}],
        "name": "ns.R", "type": "record"} and then anything"#;
    let (answers, served) = register(&[
        (0, record),
        (0, r#"{"type": "nonsense"}"#),
        (0, r#"{"type": "record", "name": "R"}"#),
        (0, r#"{"type": "record", "name": "", "fields": []}"#),
        (0, r#"{"type": "record", "name": "R", "namespace": 7, "fields": []}"#),
        (0, ""),
        (0, "{"),
    ]);
    assert_eq!(answers, [1, 2, -2, -2, -2, -2, -2]);
    let canonical = concat!(
        r#"{"type":"record","name":"R","namespace":"ns","#,
        r#""fields":[{"name":"e","type":{"type":"enum","name":"E","symbols":["A"]}}]}"#
    );
    assert_eq!(served, [schema_def(0, canonical), schema_def(0, r#"{"type":"nonsense"}"#)]);
}

/// The broker checks a JSON schema against its dialect's metaschema (json.cc, `parse_json`: `$schema`
/// if given, else any of drafts 2020-12 to 4) and keeps it written without whitespace.
#[test]
fn json_schemas_are_checked_and_stored_without_whitespace() {
    let (answers, served) = register(&[
        (2, r#"{ "type" : "object", "properties" : { "a" : { "type" : ["string", "null"] } } }"#),
        (2, "true"),
        (2, r#"{"type": "text"}"#),
        (2, r#"{"required": "a"}"#),
        (2, r#"{"$schema": "http://example.com/schema"}"#),
        (2, "42"),
        (2, r#"{"minLength": -1}"#),
        (2, r#"{"properties": {"a": 1}}"#),
        (2, "{} {}"),
    ]);
    assert_eq!(answers, [1, 2, -2, -2, -2, -2, -2, -2, -2]);
    let compact = r#"{"type":"object","properties":{"a":{"type":["string","null"]}}}"#;
    assert_eq!(served, [schema_def(2, compact), schema_def(2, "true")]);
}

/// The broker builds a Protobuf schema with protobuf's own parser and descriptor pool (protobuf.cc,
/// `make_canonical_protobuf_schema`); one that does not build is −2.
#[test]
fn protobuf_schemas_that_do_not_build_get_minus_2() {
    let proto3 = r#"syntax = "proto3";
        package p;
        import "google/protobuf/timestamp.proto";
        // A comment.
        message M {
          string a = 1;
          repeated int64 b = 2 [packed = true];
          map<string, M> c = 3;
          oneof o { bool d = 4; }
          enum E { Z = 0; ONE = 1; }
          E e = 5;
          google.protobuf.Timestamp at = 6;
          reserved 7, 9 to 11;
          reserved "old";
        }"#;
    let (answers, _) = register(&[
        (1, proto3),
        (1, "message M { optional string a = 1; required M m = 2; }"),
        (1, r#"syntax = "proto3"; message M { string a = 1 }"#),
        (1, r#"syntax = "proto3"; message M { required string a = 1; }"#),
        (1, r#"syntax = "proto3"; message M { string a = 1; string b = 1; }"#),
        (1, r#"syntax = "proto3"; message M { Missing a = 1; }"#),
        (1, r#"syntax = "proto3"; import "other.proto"; message M { string a = 1; }"#),
        (1, r#"syntax = "proto3"; enum E { A = 1; }"#),
        (1, r#"syntax = "proto2"; message M { string a = 1; }"#),
        (1, r#"syntax = "proto4";"#),
        (1, "not a schema"),
    ]);
    assert_eq!(answers, [1, 2, -2, -2, -2, -2, -2, -2, -2, -2, -2]);
}

/// Without a schema registry every function answers −1 (schema_registry_module.cc, `is_enabled`).
#[test]
fn a_disabled_schema_registry_answers_minus_1_to_everything() {
    let exprs = [
        create(260, 5, 300),
        "(call $def_len (i32.const 1) (i32.const 304))".into(),
        "(call $def (i32.const 1) (i32.const 400) (i32.const 64))".into(),
        "(call $subject_schema_len (i32.const 256) (i32.const 1) (i32.const -1) (i32.const 304))".into(),
        subject_schema(-1),
    ];
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    let wat = registry_guest(&exprs);
    assert_eq!(registry_run(&wat, SchemaRegistry::disabled()), [-1; 5]);
    assert_eq!(registry_run(&wat, SchemaRegistry::default()), [0, 0, 5, 0, 7], "the same calls, enabled");
}

/// The registry is the cluster's: a schema one VM registers is there for the next VM (schema_registry_module.cc).
#[test]
fn vms_sharing_a_schema_registry_see_each_others_schemas() {
    let exprs = [
        "(call $subject_schema_len (i32.const 256) (i32.const 1) (i32.const -1) (i32.const 304))".to_string(),
        create(260, 5, 300),
        "(i32.load (i32.const 300))".into(),
    ];
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    let wat = registry_guest(&exprs);
    let cluster = SchemaRegistry::default();
    assert_eq!(registry_run(&wat, cluster.clone()), [-2, 0, 1], "the first VM finds no subject, then registers it");
    assert_eq!(registry_run(&wat, cluster.clone()), [0, 0, 2], "the next VM finds it; registering again is id 2");
    assert_eq!(registry_run(&wat, SchemaRegistry::default()), [-2, 0, 1], "another cluster's registry does not");
}
