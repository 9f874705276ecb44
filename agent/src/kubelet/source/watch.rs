//! Watching the static pod directory with inotify: every change republishes the full set of
//! pods it describes (like the kubelet's SET updates), reparsing only files that changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::manifest::{load_file, StaticPodDefaults};

/// Events arriving this close together are one change (an editor's write + rename).
const SETTLE: Duration = Duration::from_millis(3);
/// How often a missing or unwatchable directory is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Every pod the directory describes right now, and the files that failed.
#[derive(Debug, Default, Clone)]
pub struct SourceSnapshot {
    /// Valid pods, in file order.
    pub pods: Vec<Pod>,
    /// Files that gave no pods, with the reason.
    pub errors: Vec<(PathBuf, String)>,
}

/// What a file looked like when it was last parsed.
#[derive(PartialEq, Eq, Clone, Copy)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

struct Parsed {
    stamp: Stamp,
    result: Result<Vec<Pod>, String>,
}

/// Watch `dir` until the returned receiver is dropped. The first snapshot is published
/// before this returns, so a caller starts from the directory's content.
pub fn watch_directory(
    dir: PathBuf,
    defaults: StaticPodDefaults,
) -> watch::Receiver<Arc<SourceSnapshot>> {
    let mut files = BTreeMap::new();
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    let watcher = start_watcher(&dir, changes_tx.clone());
    let first = rescan(&dir, &defaults, &mut files, watcher.as_ref().err());
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(run(
        dir, defaults, files, watcher, changes_tx, changes_rx, tx,
    ));
    rx
}

type WatchResult = Result<notify::RecommendedWatcher, String>;

fn start_watcher(dir: &Path, changes: mpsc::UnboundedSender<()>) -> WatchResult {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading the directory is itself an access event: reacting to it would rescan forever.
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = changes.send(());
        }
    })
    .map_err(|e| format!("inotify: {e}"))?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("watching {}: {e}", dir.display()))?;
    Ok(watcher)
}

async fn run(
    dir: PathBuf,
    defaults: StaticPodDefaults,
    mut files: BTreeMap<PathBuf, Parsed>,
    mut watcher: WatchResult,
    changes_tx: mpsc::UnboundedSender<()>,
    mut changes: mpsc::UnboundedReceiver<()>,
    tx: watch::Sender<Arc<SourceSnapshot>>,
) {
    loop {
        let retry = watcher.is_err();
        tokio::select! {
            _ = tx.closed() => return,
            event = changes.recv() => if event.is_none() { return },
            _ = tokio::time::sleep(RETRY), if retry => {
                watcher = start_watcher(&dir, changes_tx.clone());
            }
        }
        tokio::time::sleep(SETTLE).await;
        while changes.try_recv().is_ok() {}
        let snapshot = rescan(&dir, &defaults, &mut files, watcher.as_ref().err());
        tx.send_if_modified(|current| {
            let changed = !same(current, &snapshot);
            if changed {
                *current = Arc::new(snapshot);
            }
            changed
        });
    }
}

fn same(a: &SourceSnapshot, b: &SourceSnapshot) -> bool {
    a.errors == b.errors
        && a.pods.len() == b.pods.len()
        && a.pods
            .iter()
            .zip(&b.pods)
            .all(|(x, y)| x.metadata.uid == y.metadata.uid)
}

/// Reparse what changed since the last scan and build the snapshot.
fn rescan(
    dir: &Path,
    defaults: &StaticPodDefaults,
    files: &mut BTreeMap<PathBuf, Parsed>,
    watch_error: Option<&String>,
) -> SourceSnapshot {
    let mut snapshot = SourceSnapshot::default();
    if let Some(error) = watch_error {
        snapshot.errors.push((dir.to_owned(), error.clone()));
    }
    let present = manifest_files(dir);
    files.retain(|path, _| present.iter().any(|(p, _)| p == path));
    for (path, stamp) in present {
        let fresh = files.get(&path).is_some_and(|parsed| parsed.stamp == stamp);
        if !fresh {
            let result = load_file(&path, defaults).map_err(|e| e.to_string());
            if let Err(error) = &result {
                tracing::warn!(file = %path.display(), %error, "invalid static pod manifest");
            }
            files.insert(path.clone(), Parsed { stamp, result });
        }
        if let Some(parsed) = files.get(&path) {
            match &parsed.result {
                Ok(pods) => snapshot.pods.extend(pods.iter().cloned()),
                Err(error) => snapshot.errors.push((path, error.clone())),
            }
        }
    }
    snapshot
}

/// Regular files in `dir`, skipping hidden ones (editors' swap files, like the kubelet).
fn manifest_files(dir: &Path) -> Vec<(PathBuf, Stamp)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .flatten()
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|entry| {
            let path = entry.path();
            let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
            let stamp = Stamp {
                modified: meta.modified().ok(),
                len: meta.len(),
                inode: meta.ino(),
            };
            Some((path, stamp))
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\nspec:\n  containers:\n  - name: c\n    image: busybox\n";

    async fn next(rx: &mut watch::Receiver<Arc<SourceSnapshot>>) -> Arc<SourceSnapshot> {
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("no change seen in 5 s")
            .unwrap();
        rx.borrow_and_update().clone()
    }

    fn names(snapshot: &SourceSnapshot) -> Vec<String> {
        let names = snapshot
            .pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap());
        names.collect()
    }

    #[tokio::test]
    async fn adding_changing_and_removing_files_republishes_the_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), POD.replace("NAME", "a")).unwrap();
        std::fs::write(dir.path().join(".swp"), "garbage").unwrap();
        let defaults = StaticPodDefaults {
            node_name: "n".to_owned(),
        };
        let mut rx = watch_directory(dir.path().to_owned(), defaults);
        let first = rx.borrow_and_update().clone();
        assert_eq!(names(&first), ["a-n"]);
        assert!(first.errors.is_empty(), "{:?}", first.errors);

        std::fs::write(dir.path().join("b.yaml"), POD.replace("NAME", "b")).unwrap();
        let both = next(&mut rx).await;
        assert_eq!(names(&both), ["a-n", "b-n"]);

        let old_uid = first.pods[0].metadata.uid.clone();
        std::fs::write(
            dir.path().join("a.yaml"),
            POD.replace("NAME", "a").replace("busybox", "busybox:1"),
        )
        .unwrap();
        let changed = next(&mut rx).await;
        assert_ne!(changed.pods[0].metadata.uid, old_uid);

        std::fs::write(dir.path().join("b.yaml"), "kind: Nonsense\n").unwrap();
        let broken = next(&mut rx).await;
        assert_eq!(names(&broken), ["a-n"]);
        assert_eq!(broken.errors.len(), 1);
        assert!(broken.errors[0].1.contains("kind"), "{:?}", broken.errors);

        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        let empty = next(&mut rx).await;
        assert!(
            empty.pods.is_empty() && empty.errors.is_empty(),
            "{empty:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_directory_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        let defaults = StaticPodDefaults {
            node_name: "n".to_owned(),
        };
        let rx = watch_directory(missing.clone(), defaults);
        let snapshot = rx.borrow().clone();
        assert!(snapshot.pods.is_empty());
        assert_eq!(snapshot.errors[0].0, missing);
    }
}
