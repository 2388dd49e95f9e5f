//! The engine as the broker configures it (`wasm/wasmtime.cc`): memory and fuel limits, the stack, the
//! proposals it refuses and memory without guard pages.

mod common;

use common::*;
use transform_host::{Limits, Vm};

#[test]
fn memory_growth_past_the_limit_returns_minus_one() {
    // 2 pages + 30 = 2 MiB fits exactly; 31 more does not.
    assert_eq!(result("(i64.extend_i32_s (memory.grow (i32.const 31)))"), -1);
    assert_eq!(result("(i64.extend_i32_s (memory.grow (i32.const 30)))"), 2);
    let small = Limits { memory_bytes: 192 << 10, ..Limits::default() };
    assert_eq!(results(&guest("", "(i64.extend_i32_s (memory.grow (i32.const 2)))", ""), small, &[0]).unwrap(), [-1]);
}

#[test]
fn a_module_whose_initial_memory_exceeds_the_limit_does_not_start() {
    let wat =
        guest("", "(i64.const 0)", "").replace("(memory (export \"memory\") 2)", "(memory (export \"memory\") 40)");
    let failure = Vm::start(&load(&wat, Limits::default()).unwrap(), &meta()).err().expect("refused");
    assert!(failure.reason.contains("memory"), "{failure}");
}

#[test]
fn running_out_of_fuel_traps_with_the_record_offset() {
    let limits = Limits { runtime_ms: 5, ..Limits::default() };
    let failure = results(&guest("", "(loop $forever (br $forever)) (i64.const 0)", ""), limits, &[0, 1]).unwrap_err();
    assert!(failure.reason.contains("out of fuel") && failure.reason.contains("5 ms"), "{failure}");
    assert_eq!(failure.record, Some((3, 100)));
}

#[test]
fn fuel_is_refilled_for_every_record() {
    // About 3 M instructions per record against a budget of 10 M per record (5 ms): fine for many records,
    // though the batch as a whole uses far more than one record's budget.
    let busy = "(local $n i32) (local.set $n (i32.const 1000000))
        (loop $spin (local.set $n (i32.sub (local.get $n) (i32.const 1))) (br_if $spin (local.get $n)))
        (i64.const 7)";
    let limits = Limits { runtime_ms: 5, ..Limits::default() };
    assert_eq!(results(&guest("", busy, ""), limits, &[0; 10]).unwrap(), [7; 10]);
}

#[test]
fn deep_recursion_overflows_the_64_kib_stack() {
    let extra = "(func $deep (param i32) (result i32) (if (result i32) (local.get 0)
        (then (i32.add (i32.const 1) (call $deep (i32.sub (local.get 0) (i32.const 1))))) (else (i32.const 0))))";
    let failure =
        results(&guest("", "(i64.extend_i32_s (call $deep (i32.const 100000)))", extra), Limits::default(), &[0])
            .unwrap_err();
    assert!(failure.reason.contains("stack overflow"), "{failure}");
    assert_eq!(result_with_extra(extra, "(i64.extend_i32_s (call $deep (i32.const 100)))"), 100);
}

/// The broker passes a declared memory maximum in pages where its heap pool expects bytes, so a module
/// with any maximum deploys but its VM never starts there; nor here.
#[test]
fn a_declared_memory_maximum_deploys_but_never_starts() {
    let plain = load(&guest("", "(i64.const 0)", ""), Limits::default()).unwrap();
    assert!(plain.warnings.is_empty(), "{:?}", plain.warnings);
    let bounded =
        guest("", "(i64.const 0)", "").replace("(memory (export \"memory\") 2)", "(memory (export \"memory\") 2 32)");
    let module = load(&bounded, Limits::default()).expect("deploys");
    assert!(module.warnings.iter().any(|warning| warning.contains("maximum (32 pages)")), "{:?}", module.warnings);
    let failure = Vm::start(&module, &meta()).err().expect("the VM does not start");
    assert!(failure.reason.contains("unable to allocate memory within requested bounds"), "{}", failure.reason);
}

/// The broker's wasmtime (version 20) has tail calls, extended constant expressions and 64-bit memories
/// off; a module using one fails to compile there, so it must here (wasmtime 48 enables them).
#[test]
fn proposals_wasmtime_20_had_off_are_refused() {
    let cases = [
        ("tail call", "(return_call $answer)", "(func $answer (result i64) (i64.const 1))"),
        ("extended constant", "(global.get $sum)", "(global $sum i64 (i64.add (i64.const 1) (i64.const 2)))"),
    ];
    for (proposal, action, extra) in cases {
        let error = format!("{:#}", load(&guest("", action, extra), Limits::default()).err().expect(proposal));
        assert!(error.contains("invalid WebAssembly module"), "{proposal}: {error}");
    }
    // What wasmtime 20 enabled by default still loads: SIMD, bulk memory, multi-value, reference types.
    let simd = "(i64x2.extract_lane 0 (i64x2.splat (i64.const 5)))";
    assert_eq!(results(&guest("", simd, ""), Limits::default(), &[0]).unwrap(), [5]);
    let bulk = "(memory.fill (i32.const 2048) (i32.const 7) (i32.const 8)) (i64.load (i32.const 2048))";
    assert_eq!(results(&guest("", bulk, ""), Limits::default(), &[0]).unwrap(), [0x0707_0707_0707_0707]);
}

/// Without guard pages every access is bounds-checked: one past the memory traps at its exact end,
/// and growing moves the memory (no reserve) while keeping its contents.
#[test]
fn memory_without_guard_pages_is_checked_at_its_exact_end_and_keeps_its_contents_when_grown() {
    let last = "(i64.load8_u (i32.const 131071))";
    assert_eq!(results(&guest("", last, ""), Limits::default(), &[0]).unwrap(), [0]);
    let past = "(i64.load8_u (i32.const 131072))";
    let failure = results(&guest("", past, ""), Limits::default(), &[0]).expect_err("out of bounds");
    assert!(failure.reason.contains("out of bounds"), "{}", failure.reason);
    let grown =
        "(i64.store (i32.const 4096) (i64.const 42)) (drop (memory.grow (i32.const 20))) (i64.load (i32.const 4096))";
    assert_eq!(results(&guest("", grown, ""), Limits::default(), &[0]).unwrap(), [42]);
}
