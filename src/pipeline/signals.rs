//! SIGINT/SIGTERM: the first stops the run cleanly, the second gives up.

use tokio_util::sync::CancellationToken;

/// First SIGINT/SIGTERM: cancel `cancel` (stop taking partitions, finish
/// the writes in flight, give unfinished partitions back). Returns true on
/// a second signal (the caller exits at once), false when the runtime
/// shuts down first.
pub async fn watch(cancel: CancellationToken) -> bool {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return false;
    };
    // `recv` gives None when the runtime shuts down: that is no signal.
    tokio::select! {
        Some(_) = int.recv() => {}
        Some(_) = term.recv() => {}
        else => return false,
    }
    eprintln!("shiftload: stopping: finishing the writes in flight (signal again to exit at once)");
    cancel.cancel();
    tokio::select! {
        Some(_) = int.recv() => {}
        Some(_) = term.recv() => {}
        else => return false,
    }
    eprintln!(
        "shiftload: exiting now; unfinished partitions are taken over when their leases expire"
    );
    true
}
