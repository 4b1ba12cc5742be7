//! A measuring instrument, not part of shiftload: what the same work costs
//! on this machine when it is done in bursts between waits, as a pipeline
//! into a slow sink does it, against done back to back. No shiftload code
//! runs here, so a difference it shows belongs to the machine.
//!
//! ```text
//! cargo run --release --example burst_cost -- [UNITS] [WAIT_MS...]
//! cargo run --release --example burst_cost -- 400 0 2 15 60
//! ```
//!
//! For each wait (0 first, the baseline), on one thread, it does `UNITS`
//! units of each kind of work, sleeping `WAIT_MS` after each unit, and
//! prints the CPU time per unit (user + system, from `getrusage` of the
//! thread) and its ratio to the back-to-back run:
//! - `compute`: integer arithmetic on registers, no memory (about 1 ms);
//! - `memory`: a pass that reads a buffer written by the previous unit and
//!   writes it again (as an encoder reads a batch and writes documents):
//!   8 MiB, or `BURST_KIB` KiB from the environment.

use std::hint::black_box;
use std::time::Duration;

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    // SAFETY: an all-zero rusage is a valid value, and getrusage only
    // fills the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut u);
        u
    };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn compute(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..1_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn memory(buf: &mut [u64], seed: u64) -> u64 {
    let mut sum = seed;
    for v in buf.iter_mut() {
        sum = sum.wrapping_add(*v);
        *v = sum;
    }
    sum
}

/// CPU seconds per unit of `work`, sleeping `wait` after each unit.
fn per_unit(units: u32, wait: Duration, mut work: impl FnMut(u64) -> u64) -> f64 {
    work(0); // warm: the buffer faulted in, the code loaded
    let start = thread_cpu();
    let mut acc = 0u64;
    for i in 0..units {
        acc = acc.wrapping_add(work(i as u64));
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
    black_box(acc);
    (thread_cpu() - start) / units as f64
}

fn main() {
    let mut args = std::env::args().skip(1);
    let units: u32 = args.next().map_or(400, |a| a.parse().expect("UNITS"));
    let mut waits: Vec<u64> = args.map(|a| a.parse().expect("WAIT_MS")).collect();
    if waits.is_empty() {
        waits = vec![2, 15, 60];
    }
    waits.retain(|&w| w != 0);
    waits.insert(0, 0);
    let kib: usize = std::env::var("BURST_KIB").map_or(8192, |v| v.parse().expect("BURST_KIB"));
    let mut buf = vec![1u64; kib * 1024 / 8];
    println!("memory pass over {kib} KiB, {units} units per wait");
    println!(
        "{:>8} {:>14} {:>8} {:>14} {:>8}",
        "wait ms", "compute µs", "ratio", "memory µs", "ratio"
    );
    let mut base = None;
    for w in waits {
        let wait = Duration::from_millis(w);
        let c = per_unit(units, wait, compute);
        let m = per_unit(units, wait, |s| memory(&mut buf, s));
        let (bc, bm) = *base.get_or_insert((c, m));
        println!(
            "{w:>8} {:>14.1} {:>8.2} {:>14.1} {:>8.2}",
            c * 1e6,
            c / bc,
            m * 1e6,
            m / bm
        );
    }
}
