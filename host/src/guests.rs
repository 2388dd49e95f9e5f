//! Small guests in WebAssembly text, for tests and benchmarks of the host: they run the SDK's loop without
//! any transform logic, so what they measure or provoke is the host's.

/// A guest that writes each record's payload back as it is (records of up to 60,000 bytes).
#[derive(Debug, Clone, Copy)]
pub struct CopyingGuest {
    /// Writes each payload this many times.
    pub copies: u32,
    /// Then spins this many times (about four units of fuel each) before the next record.
    pub spins: u32,
    /// Traps (`unreachable`) on the nth record of its life.
    pub trap_after: Option<u32>,
    /// Traps on a record whose value starts with `P` (a value shorter than 64 bytes, no key).
    pub trap_on_p: bool,
}

impl Default for CopyingGuest {
    /// The identity transform.
    fn default() -> Self {
        CopyingGuest { copies: 1, spins: 0, trap_after: None, trap_on_p: false }
    }
}

impl CopyingGuest {
    pub fn wat(&self) -> String {
        let CopyingGuest { copies, spins, trap_after, trap_on_p } = *self;
        let trap_after = match trap_after {
            Some(n) => format!("(if (i32.eq (global.get $life) (i32.const {n})) (then unreachable))"),
            None => String::new(),
        };
        // No key (0x01), a value shorter than 64 bytes (a one-byte length): its first byte is at 4098.
        let trap_on_p = if trap_on_p {
            "(if (i32.eq (i32.load8_u (i32.const 4098)) (i32.const 80)) (then unreachable))"
        } else {
            ""
        };
        format!(
            r#"(module
  (import "redpanda_transform" "check_abi_version_2" (func $check))
  (import "redpanda_transform" "read_batch_header" (func $read_batch_header (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "redpanda_transform" "read_next_record" (func $read_next_record (param i32 i32 i32 i32 i32) (result i32)))
  (import "redpanda_transform" "write_record" (func $write_record (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $life (mut i32) (i32.const 0))
  (func (export "_start")
    (local $count i32) (local $i i32) (local $len i32) (local $copy i32) (local $spin i32)
    (call $check)
    (loop $batches
      (drop (call $read_batch_header (i32.const 0) (i32.const 8) (i32.const 12) (i32.const 16) (i32.const 20)
                                     (i32.const 24) (i32.const 32) (i32.const 40) (i32.const 48) (i32.const 52)))
      (local.set $count (i32.load (i32.const 8)))
      (local.set $i (i32.const 0))
      (block $done (loop $records
        (br_if $done (i32.ge_s (local.get $i) (local.get $count)))
        (local.set $len (call $read_next_record (i32.const 64) (i32.const 72) (i32.const 80) (i32.const 4096) (i32.const 60000)))
        (global.set $life (i32.add (global.get $life) (i32.const 1)))
        {trap_after}
        {trap_on_p}
        (local.set $copy (i32.const 0))
        (block $written (loop $copies
          (br_if $written (i32.ge_s (local.get $copy) (i32.const {copies})))
          (drop (call $write_record (i32.const 4096) (local.get $len)))
          (local.set $copy (i32.add (local.get $copy) (i32.const 1)))
          (br $copies)))
        (local.set $spin (i32.const {spins}))
        (block $spun (loop $spinning
          (br_if $spun (i32.eqz (local.get $spin)))
          (local.set $spin (i32.sub (local.get $spin) (i32.const 1)))
          (br $spinning)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $records)))
      (br $batches)))
)"#
        )
    }
}
