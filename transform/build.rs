//! Links the wasm module with a small shadow stack. The default is 1 MiB of the VM's 2 MiB of linear
//! memory; nothing in this module recurses (the JSON reader keeps its nesting in a bit stack), so
//! 64 KiB is ample. A link argument from here survives `rpk transform build`, which replaces RUSTFLAGS.

const STACK_BYTES: u32 = 64 * 1024;

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-bins=-zstack-size={STACK_BYTES}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
