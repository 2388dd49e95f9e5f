//! Reading an event from a record's value: its time, group-by values and aggregate inputs, or the dead-letter reason.

use crate::aggregate::{Function, Input, Number};
use crate::config::{Aggregate, Config, EventTime, MAX_AGGREGATES, MAX_GROUP_FIELDS};
use crate::dead_letter::Reason;
use crate::engine::GroupValue;
use crate::json::{JsonError, JsonKind, Member, MemberReader};
use crate::time::{format_log_time, is_integer_token, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS};

/// Values longer than this (decoded strings, number tokens) are refused: they would bloat state and keys.
pub const MAX_FIELD_BYTES: usize = 1_024;

/// What a record's value holds, read as the configuration asks.
// One lives at a time, on the stack, per record: boxing the large variant would allocate for every event.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Event<'a> {
    /// The event-time field alone (perhaps repeated), or with `@record` an empty object: it moves the
    /// watermark and counts nowhere.
    Heartbeat { time_ms: i64 },
    /// An event to count: its time, its group-by values and each aggregate's input (`None`: SQL NULL).
    Count { time_ms: i64, group: Group<'a>, inputs: Inputs<'a> },
}

/// An event's group-by values in `GROUP_BY` order, on the stack (there are at most [`MAX_GROUP_FIELDS`]).
pub(crate) struct Group<'a> {
    values: [GroupValue<'a>; MAX_GROUP_FIELDS],
    len: usize,
}

impl<'a> Group<'a> {
    pub(crate) fn values(&self) -> &[GroupValue<'a>] {
        &self.values[..self.len]
    }
}

/// One input per aggregate, in configuration order (`None` for `count` and for absent or null fields).
pub(crate) struct Inputs<'a> {
    values: [Option<Input<'a>>; MAX_AGGREGATES],
    len: usize,
}

impl<'a> Inputs<'a> {
    pub(crate) fn values(&self) -> &[Option<Input<'a>>] {
        &self.values[..self.len]
    }
}

/// Reads the fields the configuration names out of each record's value, into reused buffers.
pub(crate) struct EventReader {
    reader: MemberReader,
    fields: FieldIndices,
    /// The settings reading needs, copied from the [`Config`].
    event_time: EventTime,
    group_by: Vec<String>,
    aggregates: Vec<Aggregate>,
    max_event_ahead_ms: i64,
}

/// Where each field the configuration reads sits among the reader's wanted names (each name once).
struct FieldIndices {
    time: Option<usize>,
    group: Vec<usize>,
    /// Per aggregate; `None` for `count`.
    inputs: Vec<Option<usize>>,
}

impl EventReader {
    pub(crate) fn new(config: &Config) -> EventReader {
        let mut names: Vec<String> = Vec::new();
        let mut index_of = |name: &str| match names.iter().position(|known| known == name) {
            Some(index) => index,
            None => {
                names.push(name.to_string());
                names.len() - 1
            }
        };
        let time = match &config.event_time {
            EventTime::Field { name, .. } => Some(index_of(name)),
            EventTime::RecordTimestamp => None,
        };
        let group = config.group_by.iter().map(|name| index_of(name)).collect();
        let inputs = config.aggregates.iter().map(|aggregate| aggregate.field.as_deref().map(&mut index_of)).collect();
        EventReader {
            reader: MemberReader::new(names, MAX_FIELD_BYTES),
            fields: FieldIndices { time, group, inputs },
            event_time: config.event_time.clone(),
            group_by: config.group_by.clone(),
            aggregates: config.aggregates.clone(),
            max_event_ahead_ms: config.max_event_ahead_ms,
        }
    }

    /// Reads one record's value (`record_ms` is its Kafka timestamp); an error is the dead-letter reason
    /// and its detail.
    pub(crate) fn read(&mut self, value: Option<&[u8]>, record_ms: i64) -> Result<Event<'_>, (Reason, String)> {
        let value = value.ok_or((Reason::NoValue, "the record value is null".to_string()))?;
        let text = std::str::from_utf8(value)
            .map_err(|e| (Reason::InvalidUtf8, format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
        self.reader.read(text).map_err(|error| match error {
            JsonError::Syntax(at) => (Reason::NotJson, format!("invalid JSON at byte {at}")),
            JsonError::NotObject => (Reason::NotObject, "the value is not a JSON object".to_string()),
            JsonError::TooDeep => (Reason::TooDeep, "the value nests deeper than 64 levels".to_string()),
        })?;

        let time_ms = self.event_time(record_ms)?;
        // A value holding the timestamp field alone (perhaps repeated) is a heartbeat: it moves the
        // watermark and counts nowhere. With @record, that is an empty object.
        let heartbeat = match self.fields.time {
            Some(index) => self.reader.holds_only(index),
            None => self.reader.member_count() == 0,
        };
        if heartbeat {
            return Ok(Event::Heartbeat { time_ms });
        }

        let mut group = [GroupValue::Int(0); MAX_GROUP_FIELDS];
        for (slot, (&index, name)) in group.iter_mut().zip(self.fields.group.iter().zip(&self.group_by)) {
            *slot = group_value(self.reader.member(index), name)?;
        }
        let mut inputs = Inputs { values: [None; MAX_AGGREGATES], len: self.aggregates.len() };
        for (slot, (index, aggregate)) in inputs.values.iter_mut().zip(self.fields.inputs.iter().zip(&self.aggregates))
        {
            *slot = match (index, &aggregate.field) {
                (Some(index), Some(name)) => aggregate_input(self.reader.member(*index), name, aggregate.function)?,
                _ => None,
            };
        }
        let group = Group { values: group, len: self.group_by.len() };
        Ok(Event::Count { time_ms, group, inputs })
    }

    /// The event's time in epoch milliseconds, from its field or its record.
    fn event_time(&self, record_ms: i64) -> Result<i64, (Reason, String)> {
        let (Some(index), EventTime::Field { name, format }) = (self.fields.time, &self.event_time) else {
            if !(MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&record_ms) {
                return Err((
                    Reason::BadTimestamp,
                    format!("the record timestamp {record_ms} is outside years 0000 to 9999"),
                ));
            }
            return Ok(record_ms);
        };
        let expected = match (format.takes_text(), format.takes_number()) {
            (true, true) => "a date-time string or an integer of epoch milliseconds",
            (true, false) => "a date-time string",
            _ => "a number",
        };
        let wrong_type = |kind: JsonKind| {
            (
                Reason::WrongType,
                format!("field {name:?} is {}, expected {expected} (TIMESTAMP_FORMAT={})", kind.name(), format.name()),
            )
        };
        let not_a_time = |text: &str| {
            (
                Reason::BadTimestamp,
                format!(
                    "field {name:?} is not a date-time in years 0000 to 9999 (TIMESTAMP_FORMAT={}): {:?}",
                    format.name(),
                    clip(text)
                ),
            )
        };
        let takes = |kind: JsonKind| if kind == JsonKind::String { format.takes_text() } else { format.takes_number() };
        let event_ms = match self.reader.member(index) {
            Member::Missing => return Err((Reason::MissingField, format!("field {name:?} is missing"))),
            Member::Text(text) if format.takes_text() => format.parse_text(text).ok_or_else(|| not_a_time(text))?,
            Member::Number(token) if format.takes_number() => format.parse_number(token).map_err(|bad| {
                (
                    Reason::BadTimestamp,
                    format!("field {name:?} {} (TIMESTAMP_FORMAT={}): {}", bad.explain(), format.name(), clip(token)),
                )
            })?,
            Member::TooLong(kind) if takes(kind) => {
                return Err((Reason::BadTimestamp, format!("field {name:?} is over {MAX_FIELD_BYTES} bytes long")))
            }
            Member::Text(_) => return Err(wrong_type(JsonKind::String)),
            Member::Number(_) => return Err(wrong_type(JsonKind::Number)),
            Member::TooLong(kind) | Member::Other(kind) => return Err(wrong_type(kind)),
        };
        if event_ms > record_ms.saturating_add(self.max_event_ahead_ms) {
            return Err((
                Reason::Future,
                format!(
                    "event time {:?} is more than {}ms after the record timestamp {record_ms}",
                    format_log_time(event_ms),
                    self.max_event_ahead_ms
                ),
            ));
        }
        Ok(event_ms)
    }
}

/// A group-by value: a string, or an integer that fits in 64 bits.
fn group_value<'a>(member: Member<'a>, name: &str) -> Result<GroupValue<'a>, (Reason, String)> {
    let wrong_type =
        |what: &str| (Reason::WrongType, format!("field {name:?} is {what}, expected a string or an integer"));
    match member {
        Member::Text(text) => Ok(GroupValue::Text(text)),
        Member::Number(token) if is_integer_token(token) => token
            .parse()
            .map(GroupValue::Int)
            .map_err(|_| (Reason::OutOfRange, format!("field {name:?} is an integer beyond 64 bits: {}", clip(token)))),
        Member::Number(_) => Err(wrong_type("a number with a fraction or exponent")),
        Member::TooLong(_) => {
            Err((Reason::FieldTooLong, format!("field {name:?} is over {MAX_FIELD_BYTES} bytes long")))
        }
        Member::Missing => Err((Reason::MissingField, format!("field {name:?} is missing"))),
        Member::Other(kind) => Err(wrong_type(kind.name())),
    }
}

/// An aggregated field's value: `None` when absent or null (SQL NULL), a number otherwise. `count(FIELD)`
/// counts a value of any type (SQL `COUNT(f)`), so for it every present value reads as the number 1.
fn aggregate_input<'a>(
    member: Member<'a>,
    name: &str,
    function: Function,
) -> Result<Option<Input<'a>>, (Reason, String)> {
    let distinct = matches!(function, Function::CountDistinct | Function::ApproxCountDistinct);
    let expected = if distinct { "a string, a number or null" } else { "a number or null" };
    let wrong_type =
        |kind: JsonKind| (Reason::WrongType, format!("field {name:?} is {}, expected {expected}", kind.name()));
    match member {
        Member::Missing | Member::Other(JsonKind::Null) => Ok(None),
        _ if function == Function::CountField => Ok(Some(Input::Number(Number::Int(1)))),
        Member::Number(token) => Number::parse(token).map(|number| Some(Input::Number(number))).ok_or_else(|| {
            (Reason::OutOfRange, format!("field {name:?} is beyond the range of a 64-bit float: {}", clip(token)))
        }),
        Member::Text(text) if distinct => Ok(Some(Input::Text(text))),
        Member::TooLong(JsonKind::Number) => {
            Err((Reason::FieldTooLong, format!("field {name:?} is over {MAX_FIELD_BYTES} bytes long")))
        }
        Member::TooLong(JsonKind::String) if distinct => {
            Err((Reason::FieldTooLong, format!("field {name:?} is over {MAX_FIELD_BYTES} bytes long")))
        }
        Member::Text(_) => Err(wrong_type(JsonKind::String)),
        Member::TooLong(kind) | Member::Other(kind) => Err(wrong_type(kind)),
    }
}

/// The first characters of a value, for log lines and headers.
fn clip(text: &str) -> &str {
    let end = text.char_indices().nth(64).map_or(text.len(), |(at, _)| at);
    &text[..end]
}
