//! A partition's document in the checkpoint collection, and back.

use bson::{doc, Document};

use super::{PartitionState, Planned};
use crate::plan::Range;

/// The pending partition `p` of `generation` of `job`.
pub(super) fn partition(job: &str, p: &Planned, generation: i64) -> Document {
    let r = &p.range;
    let pending = bson::serialize_to_bson(&PartitionState::Pending).expect("a state serialises");
    let mut d = doc! {
        "_id": p.id(job, generation),
        "kind": "partition", "job": job, "generation": generation,
        "lo": r.lo, "hi": r.hi, "null": r.null,
        "state": pending, "attempts": 0i32, "timeouts": 0i32,
    };
    if let Some(part) = &p.part {
        d.insert("part", part);
    }
    if let Some(rows) = p.rows {
        d.insert("rows_expected", rows as i64);
    }
    d
}

/// What a partition's document plans.
pub(super) fn planned(d: &Document) -> Planned {
    Planned {
        range: Range {
            lo: d.get_i64("lo").unwrap_or(i64::MIN),
            hi: d.get_i64("hi").unwrap_or(i64::MAX),
            null: d.get_bool("null").unwrap_or(false),
        },
        part: d.get_str("part").ok().map(str::to_string),
        rows: d.get_i64("rows_expected").ok().map(|r| r.max(0) as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_round_trips_through_its_document() {
        let range = Range {
            lo: -5,
            hi: 70,
            null: false,
        };
        for p in [
            Planned::range(range),
            Planned::range(range).expecting(1234),
            Planned::part(3, "prefix/run/0003_part_00.parquet".into()),
        ] {
            let d = partition("job", &p, 7);
            assert_eq!(planned(&d), p);
            assert_eq!(d.get_str("_id").unwrap(), p.id("job", 7));
        }
    }
}
