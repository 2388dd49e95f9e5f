//! The module's log lines, kept as the broker's transform log manager keeps them
//! (`src/v/transform/logging/log_manager.cc`): each write to stdout or stderr is one line, cut to the
//! line limit, dropped whole when what is left is not valid UTF-8 or holds a control character other than
//! newline and tab, and dropped when the shard's log buffer is full.

/// `data_transforms_logging_line_max_bytes`.
pub const LINE_MAX_BYTES: usize = 1024;
/// `data_transforms_logging_buffer_capacity_bytes`, per shard.
pub const BUFFER_CAPACITY_BYTES: u64 = 500 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// stdout
    Info,
    /// stderr
    Warn,
}

/// One `fd_write` to stdout or stderr: one log event in the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub text: String,
}

/// Lines lost by the broker's rules, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DroppedLines {
    /// Invalid UTF-8, or a control character other than newline and tab, after the cut.
    pub invalid_text: u64,
    /// The shard's log buffer was full.
    pub buffer_full: u64,
}

/// A VM's lines since they were last taken: the shard's log buffer (one VM per shard). The broker empties
/// it into the log topic every `data_transforms_logging_flush_interval_ms`; the harness empties it after
/// every batch, so only a batch that logs more than the capacity loses lines to it.
#[derive(Debug, Default)]
pub(crate) struct LogBuffer {
    lines: Vec<LogLine>,
    bytes: u64,
    dropped: DroppedLines,
}

impl LogBuffer {
    /// Keeps one write to stdout or stderr by the broker's rules: whether the cut line fits in the buffer
    /// is asked first, then its text is checked.
    pub(crate) fn write(&mut self, level: LogLevel, bytes: &[u8]) {
        let cut = &bytes[..bytes.len().min(LINE_MAX_BYTES)];
        if self.bytes + cut.len() as u64 > BUFFER_CAPACITY_BYTES {
            self.dropped.buffer_full += 1;
            return;
        }
        let Some(text) = std::str::from_utf8(cut).ok().filter(|text| !text.bytes().any(is_refused)) else {
            self.dropped.invalid_text += 1;
            return;
        };
        self.bytes += text.len() as u64;
        self.lines.push(LogLine { level, text: text.to_string() });
    }

    /// The lines kept and dropped since the last call (a flush).
    pub(crate) fn take(&mut self) -> (Vec<LogLine>, DroppedLines) {
        self.bytes = 0;
        (std::mem::take(&mut self.lines), std::mem::take(&mut self.dropped))
    }
}

/// The broker's control characters: bytes 0x00 to 0x1F and 0x7F (not U+0080 to U+009F), but newline and tab.
fn is_refused(byte: u8) -> bool {
    (byte < 0x20 || byte == 0x7f) && byte != b'\n' && byte != b'\t'
}
