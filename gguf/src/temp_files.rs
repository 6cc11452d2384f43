//! Registry of the temp and spill files this process has open beside an output, so that a
//! SIGINT/SIGTERM handler can delete them: a process killed by a signal runs no destructors.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A file now exists that must not outlive an interrupted run.
pub fn register(path: &Path) {
    if let Ok(mut live) = LIVE.lock() {
        live.push(path.to_path_buf());
    }
}

/// The file was renamed into place or deleted by its owner.
pub fn forget(path: &Path) {
    if let Ok(mut live) = LIVE.lock() {
        live.retain(|p| p != path);
    }
}

/// Deletes every registered file (for signal handlers).
pub fn remove_all() {
    if let Ok(live) = LIVE.lock() {
        for path in live.iter() {
            let _ = std::fs::remove_file(path);
        }
    }
}
