//! The allocator's settings: the `shiftload` binary (and the benches)
//! allocate with mimalloc, tuned here for a pipeline that frees and
//! allocates buffers of several MiB every batch (Arrow columns, encoded
//! chunks, write requests) within a fixed memory budget.
//!
//! - No transparent huge pages. Each first touch of a huge page clears
//!   2 MiB; buffers that are freed and made again per batch then cost page
//!   clearing in proportion to how long they wait (a slow sink), and the
//!   partly used huge pages raise RSS.
//! - Freed memory goes back to the system after a second unused
//!   (mimalloc's own delay, set here so that it stays the same). Batches
//!   and requests vary in size, so memory once freed is not always reused;
//!   kept for good, it let peak RSS creep up with the length of the run
//!   (158, 164, 203 MiB at 1 M, 10 M, 50 M rows). With the delay, RSS
//!   follows what the last second used; with 4 KiB pages the memory
//!   faulted in again costs little.
//!
//! `MIMALLOC_ALLOW_THP` and `MIMALLOC_PURGE_DELAY` in the environment still
//! choose otherwise. The figures behind this choice are in
//! docs/ARCHITECTURE.md ("The allocator").

/// `mi_option_purge_delay` and `mi_option_allow_thp` in mimalloc v3's
/// option enum (the bindings name only the older options).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Milliseconds freed memory stays committed before it is returned.
const PURGE_AFTER_MS: std::ffi::c_long = 1000;

/// Apply the settings above to the process's mimalloc, unless the
/// environment sets them; call first thing in `main`.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain option value; mimalloc reads it at its next
        // purge.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_AFTER_MS) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: as above; no further memory is advised for huge pages.
        unsafe { libmimalloc_sys::mi_option_set(ALLOW_THP, 0) };
        #[cfg(target_os = "linux")]
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments and changes
        // only this process (mimalloc does the same for MIMALLOC_ALLOW_THP=0,
        // which it can only read before `main`).
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option numbers are mimalloc v3's: read unset, they hold its
    /// defaults (a purge delay of 1000 ms, huge pages allowed), so a
    /// mimalloc whose numbering moved is caught here.
    #[test]
    fn the_option_numbers_are_the_ones_meant() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads an option value.
            assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, 1000);
        }
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            // SAFETY: as above.
            assert_eq!(unsafe { libmimalloc_sys::mi_option_get(ALLOW_THP) }, 1);
        }
    }
}
