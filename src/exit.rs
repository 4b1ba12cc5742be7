//! Exit codes of the `shiftload` command, as the README documents them
//! (0: complete; a cron job tells its outcomes apart by these). A run's
//! code: [`RunSummary::exit_code`](crate::pipeline::RunSummary::exit_code).

/// Complete (a run), equal (`verify`), or any other command done.
pub const OK: u8 = 0;
/// The run stopped on an error (server, SQL, write); resumable.
pub const FAILED: u8 = 1;
/// The job file or mapping is wrong; nothing was written.
pub const CONFIG: u8 = 2;
/// Some partitions failed after their retries; the rest is done.
pub const PARTITIONS_FAILED: u8 = 3;
/// Complete but for rows set aside in the dead-letter file.
pub const SET_ASIDE: u8 = 4;
/// `verify`: the target differs from the source.
pub const DIFFERENT: u8 = 5;
/// Stopped by SIGINT/SIGTERM; the next run resumes.
pub const INTERRUPTED: u8 = 130;
