//! Rate limits on the module's log: warnings per minute and one summary a minute, both on record time.

/// At most this many warning lines per minute of record time; the rest are counted in the summary.
pub const WARNINGS_PER_MINUTE: u32 = 5;
/// Record time between two summary lines.
pub const SUMMARY_INTERVAL_MS: i64 = 60_000;

/// Rate limits on record time, so a flood of bad input cannot flood the broker's log. The clock is the
/// largest record time seen: partitions sharing a VM interleave older and newer record times, and a clock
/// that went back with them would restart its minute over and over.
#[derive(Default)]
pub(crate) struct LogLimiter {
    clock_ms: Option<i64>,
    last_summary_ms: Option<i64>,
    minute_start_ms: Option<i64>,
    warnings_this_minute: u32,
}

impl LogLimiter {
    fn tick(&mut self, record_ms: i64) -> i64 {
        let now = self.clock_ms.map_or(record_ms, |clock| clock.max(record_ms));
        self.clock_ms = Some(now);
        now
    }

    pub(crate) fn summary_due(&mut self, record_ms: i64) -> bool {
        let now = self.tick(record_ms);
        let due = self.last_summary_ms.is_none_or(|last| now >= last.saturating_add(SUMMARY_INTERVAL_MS));
        if due {
            self.last_summary_ms = Some(now);
        }
        due
    }

    pub(crate) fn warning_allowed(&mut self, record_ms: i64) -> bool {
        let now = self.tick(record_ms);
        if self.minute_start_ms.is_none_or(|start| now >= start.saturating_add(60_000)) {
            self.minute_start_ms = Some(now);
            self.warnings_this_minute = 0;
        }
        self.warnings_this_minute += 1;
        self.warnings_this_minute <= WARNINGS_PER_MINUTE
    }
}
