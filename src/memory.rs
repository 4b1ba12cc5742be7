//! The memory budget, and measurements of the running process.
//!
//! One budget bounds what the pipeline holds at once. Batch size and write
//! request size are derived from it, and every batch carries a byte permit
//! from the moment the reader finishes it until the last of its documents is
//! acknowledged by the target: the reader waits for permits before it hands
//! on another batch, so the total in flight never exceeds the budget.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A size in bytes, written `268435456`, `"256MiB"`, `"1.5GiB"`, `"500MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size (try \"256MiB\")"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {s:?} (use KiB, MiB, GiB)"
                ))
            }
        };
        Ok(ByteSize((n * mult as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Bytes, as an integer or a string with a unit: \"256MiB\", \"1GiB\", \"500MB\".",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9.]+\\s*([KkMmGgTt]i?[Bb]?|[Bb])?\\s*$" }
            ]
        })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0 as f64;
        let mut unit = 0;
        while v >= 1024.0 && unit < UNITS.len() - 1 {
            v /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{v:.1} {}", UNITS[unit])
        }
    }
}

/// The default budget: a quarter of the smaller of physical memory and the
/// cgroup's limit, at least 64 MiB.
pub fn default_budget() -> ByteSize {
    let physical = meminfo_total().unwrap_or(4 << 30);
    let limit = cgroup_limit().map_or(physical, |c| c.min(physical));
    ByteSize((limit / 4).max(64 << 20))
}

fn meminfo_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    kb.trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()
        .map(|k| k * 1024)
}

fn cgroup_limit() -> Option<u64> {
    // cgroup v2, then v1; "max" or a huge v1 number means no limit.
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    let text = v2.or_else(v1)?;
    text.trim().parse::<u64>().ok().filter(|&n| n < (1 << 60))
}

/// Peak resident set size of this process so far (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// How the budget is divided, and the permits that enforce it.
///
/// Of the budget, a sixteenth is one batch as the reader builds it (the
/// reader cuts a batch when the rows' wire bytes reach it, whatever their
/// width), and an eighth is kept for that batch and its builders' slack; a
/// batch in flight costs its Arrow size plus four times its BSON size (the
/// encoded buffer, the request's copy, and the driver's two: the documents
/// it re-serialises and the message it assembles);
/// write requests are cut so that all `writers` of them together stay under
/// a quarter of the budget.
#[derive(Debug, Clone)]
pub struct Budget {
    total: u64,
    permits: Arc<Semaphore>,
    /// Permits the semaphore was created with (the total less the batch
    /// being built, which holds none).
    capacity: u64,
    /// BSON bytes per Arrow byte, in thousandths, as measured so far.
    bson_per_arrow_milli: Arc<AtomicU64>,
    writers: usize,
}

/// Permits held by a batch until its last document is written.
pub type BatchPermit = Arc<OwnedSemaphorePermit>;

/// The largest batch, in wire bytes. Arrow's string and binary columns
/// address their bytes with 32-bit offsets (2 GiB); a column of a batch
/// holds at most the batch's wire bytes, which stop growing one row past
/// this cut, and a row is at most 1 GiB (PostgreSQL's limit on a value;
/// Redshift's is 16 MiB): under the limit by construction, whatever the
/// budget of a large host.
pub const MAX_BATCH_BYTES: u64 = 1 << 30;

/// Semaphore permits are counted in KiB so that any budget fits.
const UNIT: u64 = 1024;

impl Budget {
    pub fn new(total: ByteSize, writers: usize) -> Self {
        let total = total.0.max(4 << 20);
        let capacity = total - total / 8;
        Budget {
            total,
            permits: Arc::new(Semaphore::new((capacity / UNIT) as usize)),
            capacity,
            bson_per_arrow_milli: Arc::new(AtomicU64::new(1500)),
            writers: writers.max(1),
        }
    }

    pub fn total(&self) -> ByteSize {
        ByteSize(self.total)
    }

    /// Wire bytes after which the reader cuts a batch: a sixteenth of the
    /// budget, and never more than [`MAX_BATCH_BYTES`].
    pub fn batch_bytes(&self) -> usize {
        (self.total / 16).min(MAX_BATCH_BYTES) as usize
    }

    /// BSON bytes per write request, at most.
    pub fn request_bytes(&self) -> usize {
        ((self.total / 4) / (2 * self.writers as u64)).max(64 * 1024) as usize
    }

    /// What a batch of `arrow_bytes` will cost until it is written.
    pub fn batch_cost(&self, arrow_bytes: usize) -> u64 {
        let ratio = self.bson_per_arrow_milli.load(Ordering::Relaxed);
        let a = arrow_bytes as u64;
        a + 4 * a * ratio / 1000
    }

    /// Wait for the permits a batch of `arrow_bytes` needs. A batch larger
    /// than the whole budget takes all of it: it then moves alone.
    pub async fn acquire(&self, arrow_bytes: usize) -> BatchPermit {
        let units = (self.batch_cost(arrow_bytes).min(self.capacity) / UNIT).max(1) as u32;
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the budget's semaphore is never closed");
        Arc::new(permit)
    }

    /// Record a batch's measured sizes, to price the next ones.
    pub fn observe(&self, arrow_bytes: usize, bson_bytes: usize) {
        if arrow_bytes > 0 {
            let ratio = (bson_bytes as u64 * 1000 / arrow_bytes as u64).max(100);
            // Rise at once, fall slowly: a wide batch is priced right away.
            let old = self.bson_per_arrow_milli.load(Ordering::Relaxed);
            let new = if ratio > old {
                ratio
            } else {
                (old * 7 + ratio) / 8
            };
            self.bson_per_arrow_milli.store(new, Ordering::Relaxed);
        }
    }

    /// Bytes held by batches in flight right now.
    pub fn in_flight(&self) -> u64 {
        self.capacity - self.permits.available_permits() as u64 * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!("256MiB".parse::<ByteSize>().unwrap().0, 256 << 20);
        assert_eq!("1.5 GiB".parse::<ByteSize>().unwrap().0, 3 << 29);
        assert_eq!("500MB".parse::<ByteSize>().unwrap().0, 500_000_000);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert!("12 parsecs"
            .parse::<ByteSize>()
            .unwrap_err()
            .contains("parsecs"));
    }

    #[test]
    fn shares_follow_the_budget() {
        let b = Budget::new(ByteSize(256 << 20), 4);
        assert_eq!(b.batch_bytes(), 16 << 20);
        assert_eq!(b.request_bytes(), 8 << 20);
        let small = Budget::new(ByteSize(32 << 20), 4);
        assert_eq!(small.batch_bytes(), 2 << 20);
        assert_eq!(small.request_bytes(), 1 << 20);
        // A quarter of a 256 GiB host: batches stay at 1 GiB, under Arrow's
        // 2 GiB of 32-bit offsets per column with room for one more row.
        let large = Budget::new(ByteSize(64 << 30), 4);
        assert_eq!(large.batch_bytes(), 1 << 30);
        assert!(large.batch_bytes() as u64 + (1 << 30) <= i32::MAX as u64 + 1);
    }

    #[tokio::test]
    async fn permits_bound_what_is_in_flight() {
        let b = Budget::new(ByteSize(16 << 20), 1);
        // 14 MiB of permits: an eighth is left to the batch being built.
        let capacity = 14u64 << 20;
        let cost = b.batch_cost(1 << 20);
        assert!(cost > 1 << 20, "a batch costs more than its Arrow bytes");
        let fit = (capacity / cost) as usize;
        assert!(fit >= 2);
        let held: Vec<_> =
            futures_util::future::join_all((0..fit).map(|_| b.acquire(1 << 20))).await;
        let used = b.in_flight();
        assert!(
            used <= capacity && used + cost > capacity,
            "{used} of {capacity}"
        );
        // One more would exceed the budget: it waits until one is written.
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), b.acquire(1 << 20));
        assert!(waiting.await.is_err());
        let mut held = held.into_iter();
        drop(held.next());
        let more = b.acquire(1 << 20).await;
        assert_eq!(b.in_flight(), used);
        drop((held, more));
        assert_eq!(b.in_flight(), 0);
        // Larger than the whole budget: takes all of it, and still moves.
        let huge = b.acquire(64 << 20).await;
        assert_eq!(b.in_flight(), capacity);
        drop(huge);
        // The price follows wider BSON at once: Arrow + 4 × BSON.
        b.observe(1000, 3000);
        assert_eq!(b.batch_cost(1 << 20), 13 << 20);
    }
}
