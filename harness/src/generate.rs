//! A deterministic clickstream generator: the seed's events (users, event types, sites, `/item/0..9`,
//! `on_site_seconds` and `viewed_percent` in 0..100) at an event-time rate, with knobs for disorder,
//! late events, malformed records and heartbeats.

use clickstream_aggregation::time::format_timestamp_ms;

#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub events: u64,
    pub users: u32,
    pub start_ms: i64,
    /// Mean events per second of event time; gaps between events are exponential, so quiet spells occur.
    pub rate_per_sec: f64,
    /// Each event's time is moved back by up to this much (out of order).
    pub jitter_ms: i64,
    /// Share of events placed `late_by_ms` behind the stream.
    pub late_percent: f64,
    pub late_by_ms: i64,
    /// Share of records that are malformed in one of several ways.
    pub malformed_percent: f64,
    /// When the stream is quiet this long, emit a heartbeat (a value holding only the timestamp) this often.
    pub heartbeat_every_ms: Option<i64>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 1,
            events: 10_000,
            users: 50,
            start_ms: 1_605_553_200_000, // 2020-11-16 19:00:00
            rate_per_sec: 20.0,
            jitter_ms: 0,
            late_percent: 0.0,
            late_by_ms: 600_000,
            malformed_percent: 0.0,
            heartbeat_every_ms: None,
        }
    }
}

const EVENTS: [&str; 7] = ["view_item", "view_item", "view_item", "add_to_cart", "add_to_cart", "search", "checkout"];
const SITES: [&str; 3] = ["amazing-store.com", "great-deals.net", "shop-fast.io"];

/// SplitMix64: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn percent(&mut self, percent: f64) -> bool {
        self.unit() * 100.0 < percent
    }
}

/// Yields one JSON line (without newline) per record.
pub struct Generator {
    config: GeneratorConfig,
    rng: Rng,
    clock_ms: f64,
    /// Time of the next event once drawn; heartbeats due before it are emitted first.
    next_event_ms: Option<f64>,
    last_record_ms: i64,
    emitted_events: u64,
}

impl Generator {
    pub fn new(config: GeneratorConfig) -> Generator {
        Generator {
            rng: Rng(config.seed),
            clock_ms: config.start_ms as f64,
            next_event_ms: None,
            last_record_ms: config.start_ms,
            emitted_events: 0,
            config,
        }
    }

    fn click(&mut self, event_ms: i64) -> Vec<u8> {
        // Skewed popularity, so some users, events and items stand out.
        let user = (self.config.users as f64 * self.rng.unit().powi(2)) as u32;
        let item = (10.0 * self.rng.unit().powi(2)) as u32;
        let event = EVENTS[self.rng.below(EVENTS.len() as u64) as usize];
        let mut time = String::new();
        format_timestamp_ms(event_ms, &mut time);
        serde_json::json!({
            "timestamp": time,
            "event": event,
            "user_id": format!("user{user}"),
            "site_id": SITES[(user % SITES.len() as u32) as usize],
            "url": format!("/item/{item}"),
            "on_site_seconds": self.rng.below(100),
            "viewed_percent": self.rng.below(100),
        })
        .to_string()
        .into_bytes()
    }

    fn malformed(&mut self, event_ms: i64) -> Vec<u8> {
        let good = String::from_utf8(self.click(event_ms)).expect("generated JSON is UTF-8");
        let mut time = String::new();
        format_timestamp_ms(event_ms, &mut time);
        match self.rng.below(9) {
            0 => b"this is not json".to_vec(),
            1 => good.replacen("\"user_id\"", "\"user\"", 1).into_bytes(),
            2 => good.replacen("\"timestamp\":\"", "\"timestamp\":\"yesterday ", 1).into_bytes(),
            3 => format!("[{good}]").into_bytes(),
            4 => {
                let mut event: serde_json::Value = serde_json::from_str(&good).expect("generated JSON parses");
                event["event"] = serde_json::Value::Null;
                event.to_string().into_bytes()
            }
            5 => [&good.as_bytes()[..good.len() / 2], b"\xff\xfe", &good.as_bytes()[good.len() / 2..]].concat(),
            6 => format!("{{\"timestamp\":{}}}", "[".repeat(200) + &"]".repeat(200)).into_bytes(),
            7 => good.replacen(&time, "9999-12-31 23:59:59", 1).into_bytes(),
            _ => good.as_bytes()[..good.len() - 1].to_vec(),
        }
    }
}

impl Iterator for Generator {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.emitted_events >= self.config.events {
            return None;
        }
        let next_event_ms = match self.next_event_ms {
            Some(at) => at,
            None => {
                self.clock_ms += -(1.0 - self.rng.unit()).ln() / self.config.rate_per_sec.max(1e-9) * 1_000.0;
                *self.next_event_ms.insert(self.clock_ms)
            }
        };
        if let Some(every) = self.config.heartbeat_every_ms.filter(|every| *every > 0) {
            let due = self.last_record_ms + every;
            if (due as f64) < next_event_ms {
                self.last_record_ms = due;
                let mut time = String::new();
                format_timestamp_ms(due, &mut time);
                return Some(serde_json::json!({ "timestamp": time }).to_string().into_bytes());
            }
        }
        self.next_event_ms = None;
        self.emitted_events += 1;
        self.last_record_ms = next_event_ms as i64;
        let mut event_ms = self.last_record_ms;
        if self.config.jitter_ms > 0 {
            event_ms -= self.rng.below(self.config.jitter_ms as u64 + 1) as i64;
        }
        if self.rng.percent(self.config.late_percent) {
            event_ms -= self.config.late_by_ms;
        }
        Some(if self.rng.percent(self.config.malformed_percent) {
            self.malformed(event_ms)
        } else {
            self.click(event_ms)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(config: GeneratorConfig) -> Vec<String> {
        Generator::new(config).map(|line| String::from_utf8_lossy(&line).into_owned()).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let config = GeneratorConfig { events: 200, malformed_percent: 10.0, ..Default::default() };
        assert_eq!(lines(config.clone()), lines(config.clone()));
        assert_ne!(lines(config.clone()), lines(GeneratorConfig { seed: 2, ..config }));
    }

    #[test]
    fn events_have_the_seed_fields_and_ranges() {
        for line in lines(GeneratorConfig { events: 500, ..Default::default() }) {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            let object = event.as_object().unwrap();
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            assert_eq!(keys.len(), 7, "{line}");
            assert!(event["url"].as_str().unwrap().starts_with("/item/"));
            assert!(event["on_site_seconds"].as_u64().unwrap() < 100);
            assert!(event["viewed_percent"].as_u64().unwrap() < 100);
            assert!(clickstream_aggregation::time::parse_timestamp_ms(event["timestamp"].as_str().unwrap()).is_some());
        }
    }

    #[test]
    fn heartbeats_fill_quiet_spells() {
        let config =
            GeneratorConfig { events: 50, rate_per_sec: 0.05, heartbeat_every_ms: Some(5_000), ..Default::default() };
        let all = lines(config);
        let heartbeats = all.iter().filter(|line| !line.contains("user_id")).count();
        assert_eq!(all.len() - heartbeats, 50);
        // At 1 event per 20 s on average, most quiet spells exceed 5 s.
        assert!(heartbeats > 50, "{heartbeats}");
        let times: Vec<i64> = all
            .iter()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["timestamp"].as_str().unwrap().to_string()
            })
            .map(|time| clickstream_aggregation::time::parse_timestamp_ms(&time).unwrap())
            .collect();
        assert!(times.windows(2).all(|pair| pair[1] >= pair[0]), "records are in time order");
    }
}
