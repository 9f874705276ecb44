//! Start-up repair: finish or undo what a crashed server left half-made, re-attach to the
//! monitors that kept running, and release network attachments nobody owns.

use std::collections::HashSet;

use super::container::ContainerPhase;
use super::sandbox::SandboxPhase;
use super::Runtime;
use crate::image::store::fsutil;
use crate::monitor::launch;
use crate::network::AttachmentRef;

impl Runtime {
    pub(super) async fn recover(
        &self,
        broken_sandboxes: Vec<String>,
        broken_containers: Vec<String>,
    ) {
        for id in broken_containers {
            tracing::warn!(container = %id, "unreadable container record; removing its files");
            let dir = self.config.container_root().join(&id);
            let _ = super::rootfs::unmount(&super::rootfs::Layout::under(&dir).target);
            let _ = fsutil::remove_tree(&dir);
        }
        for id in broken_sandboxes {
            tracing::warn!(sandbox = %id, "unreadable sandbox record; removing its files");
            let run_dir = self.config.sandbox_run_dir(&id);
            launch::kill(&run_dir);
            let _ = super::files::SandboxFiles::under(&run_dir).unmount_shm();
            let _ = launch::cleanup(&run_dir);
            let _ = fsutil::remove_tree(&self.config.sandbox_root().join(&id));
        }
        for container in self.containers.all() {
            let orphan = self.sandboxes.get(&container.sandbox_id).is_none();
            if container.phase == ContainerPhase::Creating || orphan {
                tracing::info!(container = %container.id, "undoing a container create interrupted by a crash");
                self.discard_container(&container).await;
            }
        }
        for sandbox in self.sandboxes.all() {
            match sandbox.phase {
                SandboxPhase::Creating => {
                    tracing::info!(sandbox = %sandbox.id, "undoing a sandbox interrupted by a crash");
                    self.tear_down(&sandbox).await;
                    let _ = self.sandboxes.remove(&sandbox.id);
                }
                SandboxPhase::Ready => {
                    if launch::monitor_pid(&sandbox.run_dir).is_some() {
                        self.events.follow_sandbox(&sandbox.id, &sandbox.run_dir);
                    } else {
                        tracing::warn!(sandbox = %sandbox.id, "pod monitor is gone; sandbox reported not ready");
                    }
                }
                SandboxPhase::NotReady => {}
            }
        }
        self.remove_stray_run_dirs();
        self.collect_network_garbage().await;
    }

    /// Run directories with no sandbox record: a crash between creating one and recording it.
    fn remove_stray_run_dirs(&self) {
        let known: HashSet<std::path::PathBuf> = self
            .sandboxes
            .all()
            .into_iter()
            .map(|s| s.run_dir)
            .collect();
        let Ok(names) = fsutil::list_names(&self.config.run_root) else {
            return;
        };
        for name in names {
            let run_dir = self.config.run_root.join(&name);
            if known.contains(&run_dir) || name == "oci" {
                continue;
            }
            tracing::info!(dir = %run_dir.display(), "removing stray sandbox run dir");
            launch::kill(&run_dir);
            let _ = super::files::SandboxFiles::under(&run_dir).unmount_shm();
            let _ = launch::cleanup(&run_dir);
        }
    }

    /// CNI GC: every attachment but those of live sandboxes is released.
    async fn collect_network_garbage(&self) {
        let valid: Vec<AttachmentRef> = self
            .sandboxes
            .all()
            .into_iter()
            .filter(|s| s.phase == SandboxPhase::Ready)
            .filter_map(|s| {
                s.netns_path()
                    .map(|netns| AttachmentRef::from(&self.attachment(&s, netns)))
            })
            .collect();
        if self.cni.load().is_err() {
            return; // no network configured: nothing can have been attached
        }
        if let Err(e) = self.cni.gc(&valid).await {
            tracing::warn!(error = %e, "CNI GC failed");
        }
    }
}
