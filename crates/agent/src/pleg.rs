//! Pod lifecycle events: what wakes the pod loop between its resyncs (upstream's evented PLEG,
//! `pkg/kubelet/pleg/evented.go`, where the container runtime streams container events to the kubelet;
//! its generic PLEG relists every second instead).
//!
//! The container shims record a start by writing the container's `pid` file and an end by writing
//! its `exit` file (both by rename, see [`crate::runtime`]); an inotify watch on every container
//! directory turns those into a wake-up, so a started container is reported Running, probed and marked
//! Ready at once, and an exited one is restarted at once, rather than at the pod loop's next 500 ms
//! resync. Work the agent runs in the background (image pulls) wakes the loop through [`Waker`].
//!
//! Events carry no data: a wake-up only makes the loop look at the containers' files again, which stay
//! the one source of truth (so a lost or coalesced event costs at most one resync period, never a wrong
//! decision). Without inotify (a kernel or limit that refuses it) the loop runs on its resync alone.

use futures::stream::{BoxStream, StreamExt};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The files whose appearance in a container directory is a lifecycle event.
const EVENT_FILES: [&str; 2] = ["pid", "exit"];

/// Wakes the pod loop from background work (an image pull that finished). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Waker(tokio::sync::mpsc::UnboundedSender<()>);

impl Waker {
    /// Ask for a pass of the pod loop.
    pub fn wake(&self) {
        let _ = self.0.send(());
    }
}

/// The container directories being watched.
pub struct Pleg {
    watches: Option<inotify::Watches>,
    watched: HashSet<PathBuf>,
    waker: Waker,
}

impl Pleg {
    /// A PLEG and the stream of its wake-ups (one item per event; give it to
    /// `controller_runtime::Informers::wake_on`).
    #[must_use]
    pub fn new() -> (Pleg, BoxStream<'static, ()>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let woken = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let inotify = inotify::Inotify::init().and_then(|i| {
            let watches = i.watches();
            let events = i.into_event_stream(vec![0u8; 4096])?;
            Ok((watches, events))
        });
        match inotify {
            Ok((watches, events)) => {
                let files = events
                    .filter_map(|ev| {
                        std::future::ready(match ev {
                            Ok(ev) => ev
                                .name
                                .as_deref()
                                .and_then(|n| n.to_str())
                                .filter(|n| EVENT_FILES.contains(n))
                                .map(|_| ()),
                            Err(e) => {
                                tracing::warn!(error = %e, "container events (inotify) failed");
                                None
                            }
                        })
                    })
                    .boxed();
                let pleg = Pleg {
                    watches: Some(watches),
                    watched: HashSet::new(),
                    waker: Waker(tx),
                };
                (pleg, futures::stream::select(files, woken).boxed())
            }
            Err(e) => {
                tracing::warn!(error = %e, "no container events (inotify); the pod loop runs on its resync");
                let pleg = Pleg {
                    watches: None,
                    watched: HashSet::new(),
                    waker: Waker(tx),
                };
                (pleg, woken.boxed())
            }
        }
    }

    /// A handle for background work to wake the loop.
    #[must_use]
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Watch the container directory `dir` (idempotent; a directory that does not exist yet is
    /// skipped and watched on a later call, so call this before starting the container).
    pub fn watch(&mut self, dir: &Path) {
        let Some(watches) = self.watches.as_mut() else {
            return;
        };
        if self.watched.contains(dir) {
            return;
        }
        let mask = inotify::WatchMask::MOVED_TO | inotify::WatchMask::CLOSE_WRITE;
        match watches.add(dir, mask) {
            Ok(_) => {
                self.watched.insert(dir.to_path_buf());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "watching container directory"),
        }
    }

    /// Forget directories that no longer exist (the kernel drops a deleted directory's watch itself).
    pub fn forget_removed(&mut self) {
        self.watched.retain(|d| d.exists());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_recorded_start_or_exit_wakes_and_other_files_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let (mut pleg, mut events) = Pleg::new();
        pleg.watch(&dir); // not there yet: skipped
        std::fs::create_dir(&dir).unwrap();
        pleg.watch(&dir);
        pleg.watch(&dir);
        async fn next(events: &mut BoxStream<'static, ()>) -> bool {
            tokio::time::timeout(Duration::from_millis(300), events.next())
                .await
                .is_ok()
        }
        std::fs::write(dir.join("started"), "x").unwrap();
        assert!(!next(&mut events).await, "an unrelated file wakes nothing");
        std::fs::write(dir.join("pid.tmp"), "1").unwrap();
        // The pid.tmp write itself is not an event; its rename to `pid` is.
        assert!(!next(&mut events).await);
        std::fs::rename(dir.join("pid.tmp"), dir.join("pid")).unwrap();
        assert!(next(&mut events).await, "the recorded start wakes");
        std::fs::write(dir.join("exit"), "0").unwrap();
        assert!(next(&mut events).await, "the recorded exit wakes");
        pleg.waker().wake();
        assert!(next(&mut events).await, "a waker wakes");
        std::fs::remove_dir_all(&dir).unwrap();
        pleg.forget_removed();
        assert!(pleg.watched.is_empty());
    }
}
