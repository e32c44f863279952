//! What makes the loop swap or stop: a change of the guest file, SIGHUP,
//! SIGTERM and Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::channels::Control;

/// Builds and tools write a file in several steps: wait this long after
/// the last change before swapping.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Watch `path` and ask for a swap once it has settled after a change.
/// The directory is watched, not the file, so a file replaced by a rename
/// (as cargo and editors do) is still seen. Keep the returned watcher alive.
pub fn guest_file(
    path: &Path,
    control: mpsc::UnboundedSender<Control>,
) -> notify::Result<notify::RecommendedWatcher> {
    let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let target = file.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
            && event.paths.iter().any(|p| p == &target)
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: swap once the writes have stopped for SETTLE.
            loop {
                match tokio::time::timeout(SETTLE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            tracing::info!(path = %file.display(), "the guest file changed");
            if control.send(Control::Reload { request: None }).is_err() {
                return;
            }
        }
    });
    Ok(watcher)
}

/// SIGHUP swaps; SIGTERM and Ctrl-C shut down gracefully (a second one
/// stops at once).
pub fn signals(control: mpsc::UnboundedSender<Control>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut stopping = false;
        loop {
            let stop = tokio::select! {
                _ = hup.recv() => false,
                _ = term.recv() => true,
                _ = int.recv() => true,
            };
            if !stop {
                tracing::info!("SIGHUP: swapping the guest");
                let _ = control.send(Control::Reload { request: None });
            } else if stopping {
                tracing::warn!("second stop signal: exiting now");
                std::process::exit(130);
            } else {
                stopping = true;
                let _ = control.send(Control::Shutdown);
            }
        }
    });
    Ok(())
}
