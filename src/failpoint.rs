//! Named points where a test can make shiftload fail on purpose, to prove
//! that a failure the code does not expect still never ends in a false
//! "complete". Off unless `SHIFTLOAD_FAILPOINTS` names them (a comma list);
//! each check is one atomic load after the first.
//!
//! - `reader-panic`: the wire reader's task panics after its first batch.

use std::sync::OnceLock;

fn active() -> &'static [String] {
    static ACTIVE: OnceLock<Vec<String>> = OnceLock::new();
    ACTIVE.get_or_init(|| {
        std::env::var("SHIFTLOAD_FAILPOINTS")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    })
}

/// Whether the failpoint `name` is on.
pub fn on(name: &str) -> bool {
    active().iter().any(|a| a == name)
}
