//! What the broker refuses at deploy (`wasm/parser`), before any VM starts.

mod common;

use common::*;
use transform_host::{Limits, TransformModule, Vm};

#[test]
fn modules_the_broker_refuses_are_refused() {
    let minimal = |imports: &str, exports: &str| format!("(module {imports} {exports})");
    let check = r#"(import "redpanda_transform" "check_abi_version_2" (func))"#;
    let start = r#"(memory (export "memory") 1) (func (export "_start"))"#;
    let cases = [
        (minimal(check, r#"(memory (export "memory") 1)"#), "missing required WASI functions"),
        (minimal(check, r#"(memory (export "mem") 1) (func (export "_start"))"#), "invalid memory export name"),
        (minimal(check, r#"(func (export "_start"))"#), "no memory export"),
        (minimal("", start), "missing required transform functions"),
        (
            minimal(&format!(r#"{check} (import "redpanda_schema_registry" "check_abi_version_1" (func))"#), start),
            "unsupported Schema Registry client",
        ),
    ];
    for (wat, expected) in cases {
        let error = format!("{:#}", load(&wat, Limits::default()).err().expect("refused"));
        assert!(error.contains(expected), "{expected}: {error}");
    }
    // An import the broker does not provide passes deploy; creating the processor fails (every 30 s).
    for import in [
        r#"(import "wasi_snapshot_preview1" "fd_fdstat_set_rights" (func (param i32 i64 i64) (result i32)))"#,
        r#"(import "wasi_snapshot_preview1" "proc_raise" (func (param i32) (result i32)))"#,
        r#"(import "env" "anything" (func))"#,
    ] {
        let module = load(&minimal(&format!("{check} {import}"), start), Limits::default()).expect("deploys");
        assert!(module.warnings.iter().any(|warning| warning.contains("does not provide")), "{:?}", module.warnings);
        let failure = Vm::start(&module, &meta()).err().expect("no processor");
        assert!(failure.reason.contains("creating the processor failed"), "{}", failure.reason);
    }
    let too_big = Limits { binary_bytes: 16, ..Limits::default() };
    assert!(format!("{:#}", load(&minimal(check, start), too_big).err().unwrap()).contains("over the 16-byte limit"));
    // The older ABI version and the schema-registry ABI are accepted.
    let v1 = r#"(import "redpanda_transform" "check_abi_version_1" (func))"#;
    let sr = r#"(import "redpanda_schema_registry" "check_abi_version_0" (func))"#;
    assert!(load(&minimal(&format!("{v1} {sr}"), start), Limits::default()).unwrap().imports_schema_registry);
}

/// A minimal transform module in binary form: the ABI import, `memory` and an empty `_start`.
fn minimal_binary() -> Vec<u8> {
    fn section(id: u8, body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 128, "a one-byte size");
        [&[id, body.len() as u8][..], body].concat()
    }
    fn name(text: &str) -> Vec<u8> {
        [&[text.len() as u8][..], text.as_bytes()].concat()
    }
    let imports = [&[1][..], &name("redpanda_transform"), &name("check_abi_version_2"), &[0, 0]].concat();
    let exports = [&[2][..], &name("memory"), &[2, 0], &name("_start"), &[0, 1]].concat();
    [
        &b"\0asm\x01\0\0\0"[..],
        &section(1, &[1, 0x60, 0, 0]),
        &section(2, &imports),
        &section(3, &[1, 0]),
        &section(5, &[1, 0, 1]),
        &section(7, &exports),
        &section(10, &[1, 2, 0, 0x0b]),
    ]
    .concat()
}

fn deploy_error(wasm: &[u8]) -> String {
    format!("{:#}", TransformModule::load(wasm, Limits::default()).err().expect("refused"))
}

/// The broker's parser knows no v128 value type in a function type (parser.cc, `parse_val_type`).
#[test]
fn a_function_type_with_a_v128_parameter_is_refused() {
    let error = deploy_error(guest("", "(i64.const 0)", "(func (param v128))").as_bytes());
    assert!(error.contains("the broker's deploy parser") && error.contains("v128"), "{error}");
}

/// The broker's parser takes a global initialiser of one instruction only (parser.cc, `skip_global_constexpr`).
#[test]
fn a_global_with_an_extended_constant_initialiser_is_refused() {
    let extra = "(global i32 (i32.add (i32.const 1) (i32.const 2)))";
    let error = deploy_error(guest("", "(i64.const 0)", extra).as_bytes());
    assert!(error.contains("the broker's deploy parser") && error.contains("longer than one instruction"), "{error}");
}

/// The broker's parser refuses a section id it does not know (parser.cc, `parse_one_section`).
#[test]
fn a_binary_with_an_unknown_section_id_is_refused() {
    let valid = minimal_binary();
    assert!(TransformModule::load(&valid, Limits::default()).is_ok(), "the minimal binary deploys");
    let error = deploy_error(&[&valid[..], &[13, 0]].concat());
    assert!(error.contains("the broker's deploy parser") && error.contains("unknown section id 13"), "{error}");
}

/// The broker's parser skips code: SIMD inside a function body deploys and runs (parser.cc, `parse_one_section`).
#[test]
fn simd_inside_a_function_body_is_accepted() {
    let extra = "(func $simd (result i32) (i32x4.extract_lane 2 (i32x4.splat (i32.const 7))))";
    assert_eq!(result_with_extra(extra, "(i64.extend_i32_s (call $simd))"), 7);
}
