//! `redpanda_transform`: the data-transform ABI as the broker implements it (`src/v/wasm/transform_module.cc`).
//!
//! The guest's `read_batch_header` suspends its fiber until the host leaves the next batch in the
//! [`Mailbox`]; re-entering it tells the host the previous batch is done. Fuel is refilled for every
//! record read, so the CPU limit is per record.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime::Linker;

use crate::batch::{BatchOutput, InputBatch, Written};
use crate::guest_memory::{self, Ctx, HasGuestMemory};
use crate::wasi::WasiState;
use crate::wire::BrokerReader;

const NO_ACTIVE_TRANSFORM: i32 = -1;
const INVALID_BUFFER: i32 = -2;
const INVALID_WRITE: i32 = -3;

/// What the guest tells the host when it suspends in `read_batch_header`.
pub(crate) enum GuestEvent {
    /// The guest reached its first `read_batch_header`: started.
    Ready(BatchOutput),
    /// The guest asked for the next batch: the previous one is done.
    BatchDone(BatchOutput),
}

/// Where the host and the suspended guest leave things for each other.
#[derive(Default)]
pub(crate) struct Mailbox {
    pub(crate) batch: Option<Arc<InputBatch>>,
    pub(crate) event: Option<GuestEvent>,
}

pub(crate) type SharedMailbox = Arc<Mutex<Mailbox>>;

/// The transform ABI's part of a VM's state.
pub(crate) struct AbiState {
    fuel_per_record: u64,
    output_topics: Vec<String>,
    mailbox: SharedMailbox,
    /// The batch being handled and the index of the next record to read.
    current: Option<(Arc<InputBatch>, usize)>,
    /// Fuel the records of the current batch before the one being handled used.
    batch_fuel: u64,
    started: bool,
    output: BatchOutput,
}

impl AbiState {
    pub(crate) fn new(fuel_per_record: u64, output_topics: Vec<String>, mailbox: SharedMailbox) -> AbiState {
        AbiState {
            fuel_per_record,
            output_topics,
            mailbox,
            current: None,
            batch_fuel: 0,
            started: false,
            output: BatchOutput::default(),
        }
    }

    /// Whether the guest reached its first `read_batch_header`.
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    /// The record being handled: the last one read, or the batch's first before any is read (the SDK
    /// sizes its buffer for the batch's largest record in between, and may run out of memory there).
    pub(crate) fn current_record(&self) -> Option<(u32, i64)> {
        let (batch, next) = self.current.as_ref()?;
        Some((batch.partition, batch.records.get(next.saturating_sub(1))?.offset))
    }

    /// What the guest wrote for the batch it failed in, with `fuel_left` of the failing record's fuel: the
    /// broker's producer loops may have written part of it before the failure.
    pub(crate) fn take_unfinished_output(&mut self, fuel_left: u64) -> BatchOutput {
        let mut output = std::mem::take(&mut self.output);
        if self.current.is_some() {
            output.fuel = self.batch_fuel + self.fuel_per_record.saturating_sub(fuel_left);
        }
        output
    }
}

/// Waits until the host leaves the next batch in the mailbox.
struct NextBatch(SharedMailbox);

impl Future for NextBatch {
    type Output = Arc<InputBatch>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Arc<InputBatch>> {
        match self.0.lock().expect("the mailbox is never poisoned").batch.take() {
            Some(batch) => Poll::Ready(batch),
            None => Poll::Pending,
        }
    }
}

/// Sizes of `read_batch_header`'s out-parameters: base offset, record count, leader epoch, attributes,
/// last offset delta, base and max timestamp, producer id, producer epoch, base sequence.
const HEADER_FIELD_BYTES: [i32; 10] = [8, 4, 4, 2, 4, 8, 8, 8, 2, 4];

/// Links the ABI; `parts` gives the ABI's state and the WASI state whose clock and logs it drives (the
/// broker's transform module sets the WASI wall clock to each record's timestamp).
pub(crate) fn link<T: HasGuestMemory + Send + 'static>(
    linker: &mut Linker<T>,
    parts: fn(&mut T) -> (&mut AbiState, &mut WasiState),
) -> wasmtime::Result<()> {
    const MODULE: &str = "redpanda_transform";
    linker.func_wrap(MODULE, "check_abi_version_1", || {})?;
    linker.func_wrap(MODULE, "check_abi_version_2", || {})?;
    type Fields = (i32, i32, i32, i32, i32, i32, i32, i32, i32, i32);
    linker.func_wrap_async(MODULE, "read_batch_header", move |mut caller: Ctx<'_, T>, fields: Fields| {
        Box::new(async move {
            let (a, b, c, d, e, f, g, h, i, j) = fields;
            let fields = [a, b, c, d, e, f, g, h, i, j];
            let ranges: [(i32, i32); 10] = std::array::from_fn(|field| (fields[field], HEADER_FIELD_BYTES[field]));
            guest_memory::check(&mut caller, &ranges)?;
            if parts(caller.data_mut()).0.started {
                note_record_fuel(&mut caller, parts)?;
            }
            let (abi, wasi) = parts(caller.data_mut());
            // The next batch's buffers start at this one's sizes, so they rarely grow record by record.
            let sized_like = BatchOutput {
                bytes: Vec::with_capacity(abi.output.bytes.len()),
                written: Vec::with_capacity(abi.output.written.len()),
                ..BatchOutput::default()
            };
            let mut finished = std::mem::replace(&mut abi.output, sized_like);
            finished.fuel = abi.batch_fuel;
            (finished.logs, finished.dropped_logs) = wasi.take_logs();
            abi.current = None;
            abi.batch_fuel = 0;
            let event = if abi.started {
                GuestEvent::BatchDone(finished)
            } else {
                abi.started = true;
                GuestEvent::Ready(finished)
            };
            let mailbox = abi.mailbox.clone();
            mailbox.lock().expect("the mailbox is never poisoned").event = Some(event);
            let batch = NextBatch(mailbox).await;
            let header = batch_header(&batch);
            let (abi, wasi) = parts(caller.data_mut());
            wasi.set_wall_clock_ms(batch.records[0].timestamp_ms);
            abi.current = Some((batch, 0));
            // Each field's little-endian bytes are the first of its value's, widened to 64 bits.
            let header = header.map(i64::to_le_bytes);
            let writes: [(i32, &[u8]); 10] =
                std::array::from_fn(|field| (fields[field], &header[field][..HEADER_FIELD_BYTES[field] as usize]));
            guest_memory::write_all(&mut caller, &writes)?;
            let largest = parts(caller.data_mut())
                .0
                .current
                .as_ref()
                .map_or(0, |(batch, _)| batch.records.iter().map(|r| r.payload.len()).max().unwrap_or(0));
            Ok(largest as i32)
        })
    })?;
    linker.func_wrap(
        MODULE,
        "read_next_record",
        move |mut caller: Ctx<'_, T>,
              attributes: i32,
              timestamp: i32,
              offset: i32,
              buf: i32,
              len: i32|
              -> wasmtime::Result<i32> {
            guest_memory::check(&mut caller, &[(attributes, 1), (timestamp, 8), (offset, 8), (buf, len)])?;
            let Some((batch, next)) = parts(caller.data_mut()).0.current.clone() else {
                return Ok(NO_ACTIVE_TRANSFORM);
            };
            let Some(record) = batch.records.get(next) else { return Ok(NO_ACTIVE_TRANSFORM) };
            if next > 0 {
                note_record_fuel(&mut caller, parts)?;
            }
            if (len as u32 as usize) < record.payload.len() {
                return Ok(INVALID_BUFFER); // not consumed: a retry with a larger buffer would succeed
            }
            guest_memory::write_all(
                &mut caller,
                &[
                    (attributes, &[0]),
                    (timestamp, &record.timestamp_ms.to_le_bytes()),
                    (offset, &record.offset.to_le_bytes()),
                    (buf, &record.payload),
                ],
            )?;
            let (abi, wasi) = parts(caller.data_mut());
            abi.current = Some((batch.clone(), next + 1));
            wasi.set_wall_clock_ms(record.timestamp_ms);
            let fuel = abi.fuel_per_record;
            caller.set_fuel(fuel)?;
            Ok(record.payload.len() as i32)
        },
    )?;
    linker.func_wrap(MODULE, "write_record", move |mut caller: Ctx<'_, T>, buf: i32, len: i32| {
        write(&mut caller, parts, buf, len, None)
    })?;
    linker.func_wrap(
        MODULE,
        "write_record_with_options",
        move |mut caller: Ctx<'_, T>, buf: i32, len: i32, options: i32, options_len: i32| {
            write(&mut caller, parts, buf, len, Some((options, options_len)))
        },
    )?;
    Ok(())
}

/// The header fields of a batch in `read_batch_header`'s parameter order, each widened to 64 bits from its
/// type (sized by [`HEADER_FIELD_BYTES`]). The broker copies the stored batch's leader epoch, attributes
/// and producer fields; the harness's batches are a plain producer's (no idempotence, CreateTime, epoch 1).
fn batch_header(batch: &InputBatch) -> [i64; 10] {
    let first = &batch.records[0];
    let last = batch.records.last().expect("batches are not empty");
    let max_timestamp = batch.records.iter().map(|r| r.timestamp_ms).max().unwrap_or(first.timestamp_ms);
    [
        first.offset,
        i64::from(batch.records.len() as i32),
        1,
        0,
        i64::from((last.offset - first.offset) as i32),
        first.timestamp_ms,
        max_timestamp,
        -1,
        -1,
        -1,
    ]
}

/// One write as the broker handles it: every pointer range is checked before anything else (a bad one
/// traps even where the call would answer −1), then the active transform (−1), the payload (−2) and the
/// options (−2 malformed, −3 no such output topic, a trap for a topic length past them). A good write is
/// kept in the batch's output as written: the broker copies the payload into the record unchanged.
fn write<T: HasGuestMemory>(
    caller: &mut Ctx<'_, T>,
    parts: fn(&mut T) -> (&mut AbiState, &mut WasiState),
    buf: i32,
    len: i32,
    options: Option<(i32, i32)>,
) -> wasmtime::Result<i32> {
    let options = options.map(|(ptr, len)| guest_memory::read(caller, ptr, len)).transpose()?;
    let fuel_left = caller.get_fuel()?;
    let memory = guest_memory::memory(caller)?;
    let (data, state) = memory.data_and_store_mut(caller);
    let bytes = guest_memory::range(data, buf, len)?;
    let abi = parts(state).0;
    let Some((_, next)) = abi.current else {
        return Ok(NO_ACTIVE_TRANSFORM);
    };
    if !broker_takes_payload(bytes) {
        return Ok(INVALID_BUFFER);
    }
    let topic = match options.as_deref().map(write_target) {
        None | Some(Ok(WriteTarget::DefaultTopic)) => 0,
        Some(Ok(WriteTarget::Topic(name))) => match abi.output_topics.iter().position(|t| t.as_bytes() == name) {
            Some(index) => index,
            None => return Ok(INVALID_WRITE),
        },
        Some(Err(OptionsError::Malformed)) => return Ok(INVALID_BUFFER),
        Some(Err(OptionsError::OutOfRange)) => {
            return Err(wasmtime::format_err!(
                "failure executing host function: the topic name's length runs past the write options"
            ))
        }
    };
    let fuel = abi.batch_fuel + abi.fuel_per_record.saturating_sub(fuel_left);
    let output = &mut abi.output;
    let start = output.bytes.len();
    output.bytes.extend_from_slice(bytes);
    output.written.push(Written { topic, record: next.saturating_sub(1), fuel, start, end: output.bytes.len() });
    Ok(len)
}

/// Whether the broker takes a written payload (`model/transform.cc`, `validate_record_payload`): key and
/// value lengths of at least −1 that stay inside the buffer, a header count of at least 0, as many header
/// keys and values, and nothing after them. With its varint reader a payload cut short passes where what
/// is missing reads as 0: `[]` is an empty key and value without headers. The broker writes such a payload
/// as it is, a record its consumers cannot parse.
fn broker_takes_payload(bytes: &[u8]) -> bool {
    fn key_and_value(reader: &mut BrokerReader<'_>) -> Option<()> {
        for _ in 0..2 {
            let len = reader.varint();
            if len < -1 {
                return None;
            }
            reader.bytes(len.max(0))?;
        }
        Some(())
    }
    let mut reader = BrokerReader::new(bytes);
    let valid = (|| {
        key_and_value(&mut reader)?;
        let count = reader.varint();
        if count < 0 {
            return None;
        }
        // Once the buffer is used up every further header reads as empty and passes (the broker loops
        // through them all), so the count is not walked to its end.
        for _ in 0..count {
            if reader.is_empty() {
                break;
            }
            key_and_value(&mut reader)?;
        }
        Some(())
    })();
    valid.is_some() && reader.is_empty()
}

/// Where a write goes, from its options: the first output topic, or one named (bytes as written; the
/// broker checks the name against its output topics only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteTarget<'a> {
    DefaultTopic,
    Topic(&'a [u8]),
}

/// Options the broker refuses: `Malformed` is answered −2; `OutOfRange` (a topic length that is negative
/// or runs past the buffer) makes the broker's reader throw, which traps the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OptionsError {
    Malformed,
    OutOfRange,
}

/// Where a write goes, read as the broker reads the options (`transform_module.cc`, `write_options::parse`,
/// with `ffi::reader`): empty means the first output topic; else the key `0x01` (another is −2), a sized
/// topic name (a length past the options throws, which traps), and nothing after it (−2).
fn write_target(options: &[u8]) -> Result<WriteTarget<'_>, OptionsError> {
    let mut reader = BrokerReader::new(options);
    if reader.is_empty() {
        return Ok(WriteTarget::DefaultTopic);
    }
    if reader.bytes(1) != Some(&[0x01]) {
        return Err(OptionsError::Malformed);
    }
    let topic = reader.sized().ok_or(OptionsError::OutOfRange)?;
    if reader.is_empty() {
        Ok(WriteTarget::Topic(topic))
    } else {
        Err(OptionsError::Malformed)
    }
}

/// Records how much fuel the record that just finished used (fuel is refilled per record).
fn note_record_fuel<T>(
    caller: &mut Ctx<'_, T>,
    parts: fn(&mut T) -> (&mut AbiState, &mut WasiState),
) -> wasmtime::Result<()> {
    let fuel = caller.get_fuel()?;
    let abi = parts(caller.data_mut()).0;
    let used = abi.fuel_per_record.saturating_sub(fuel);
    abi.batch_fuel += used;
    abi.output.max_record_fuel = abi.output.max_record_fuel.max(used);
    Ok(())
}
