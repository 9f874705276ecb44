//! End-to-end tests of applying layers. They run as root: chown, mknod and `trusted.*`
//! xattrs need it.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::*;

/// A scratch area: `dest` receives the layer, `outside` must stay untouched.
struct Scratch {
    _dir: tempfile::TempDir,
    dest: PathBuf,
    outside: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        let outside = dir.path().join("outside");
        fs::create_dir(&dest).unwrap();
        fs::create_dir(&outside).unwrap();
        Self {
            _dir: dir,
            dest,
            outside,
        }
    }

    fn apply(&self, blob: &[u8], compression: Compression) -> Result<LayerStats, UnpackError> {
        self.apply_with(blob, compression, &UnpackOptions::default())
    }

    fn apply_with(
        &self,
        blob: &[u8],
        compression: Compression,
        options: &UnpackOptions,
    ) -> Result<LayerStats, UnpackError> {
        apply_layer(blob, compression, &self.dest, options)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }

    fn outside_names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Nothing appeared next to `dest` or `outside` either.
    fn parent_names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dest.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Builds tar streams, normal entries through `tar::Builder`, hostile ones raw.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn header(kind: EntryType, mode: u32, uid: u64, gid: u64, mtime: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h.set_size(0);
        h
    }

    fn dir(mut self, path: &str, mode: u32, uid: u64, gid: u64, mtime: u64) -> Self {
        let mut h = Self::header(EntryType::Directory, mode, uid, gid, mtime);
        self.0.append_data(&mut h, path, io::empty()).unwrap();
        self
    }

    fn file_with(
        mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> Self {
        let mut h = Self::header(EntryType::Regular, mode, uid, gid, mtime);
        h.set_size(data.len() as u64);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    fn file(self, path: &str, data: &[u8]) -> Self {
        self.file_with(path, data, 0o644, 0, 0, 1_000_000)
    }

    fn symlink_with(mut self, path: &str, target: &str, uid: u64, gid: u64, mtime: u64) -> Self {
        let mut h = Self::header(EntryType::Symlink, 0o777, uid, gid, mtime);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    fn symlink(self, path: &str, target: &str) -> Self {
        self.symlink_with(path, target, 0, 0, 1_000_000)
    }

    fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(EntryType::Link, 0o644, 0, 0, 1_000_000);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    fn special(mut self, path: &str, kind: EntryType, major: u32, minor: u32, mode: u32) -> Self {
        let mut h = Self::header(kind, mode, 0, 0, 1_000_000);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.0.append_data(&mut h, path, io::empty()).unwrap();
        self
    }

    /// An entry whose name (and link name) bytes are written as given, unchecked.
    fn raw(mut self, kind: EntryType, name: &[u8], link: &[u8], data: &[u8]) -> Self {
        let mut h = raw_header(kind, name, data.len() as u64);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    /// A PAX extended header for the entry that follows.
    fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            data.extend(pax_record(key, value));
        }
        let h = raw_header(EntryType::XHeader, b"././@PaxHeader", data.len() as u64);
        self.0.append(&h, data.as_slice()).unwrap();
        self
    }

    /// The archive with its end marker.
    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }

    /// The archive without an end marker (as if the stream stopped between entries).
    fn unterminated(self) -> Vec<u8> {
        let mut bytes = self.finish();
        bytes.truncate(bytes.len() - 1024);
        bytes
    }
}

fn raw_header(kind: EntryType, name: &[u8], size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_000_000);
    h.set_cksum();
    h
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 1).unwrap()
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

#[test]
fn plain_entries_keep_modes_owners_and_times() {
    let layer = Layer::new()
        .dir("etc", 0o750, 1, 2, 1000)
        .file_with("etc/conf", b"hello", 0o640, 3, 4, 2000)
        .symlink_with("etc/link", "/etc/conf", 5, 6, 3000)
        .hardlink("etc/hard", "etc/conf")
        .file("bin/tool", b"#!/bin/sh\n")
        .finish();
    let s = Scratch::new();
    let stats = s.apply(&layer, Compression::None).unwrap();

    let etc = fs::metadata(s.path("etc")).unwrap();
    assert!(etc.is_dir());
    assert_eq!(
        (etc.mode() & 0o7777, etc.uid(), etc.gid(), etc.mtime()),
        (0o750, 1, 2, 1000)
    );
    let conf = fs::symlink_metadata(s.path("etc/conf")).unwrap();
    assert_eq!(fs::read(s.path("etc/conf")).unwrap(), b"hello");
    assert_eq!(
        (conf.mode() & 0o7777, conf.uid(), conf.gid(), conf.mtime()),
        (0o640, 3, 4, 2000)
    );
    let link = fs::symlink_metadata(s.path("etc/link")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(
        fs::read_link(s.path("etc/link")).unwrap(),
        Path::new("/etc/conf")
    );
    assert_eq!((link.uid(), link.gid(), link.mtime()), (5, 6, 3000));
    let hard = fs::symlink_metadata(s.path("etc/hard")).unwrap();
    assert_eq!((hard.ino(), hard.nlink()), (conf.ino(), 2));
    let bin = fs::metadata(s.path("bin")).unwrap();
    assert_eq!((bin.mode() & 0o7777, bin.uid()), (0o755, 0));

    assert_eq!(stats.entries, 5);
    assert_eq!(stats.bytes, 5 + 10);
    // etc, conf, link, hard, bin (implicit), tool
    assert_eq!(stats.inodes, 6);
    assert_eq!(stats.diff_id, sha256(&layer));
}

#[test]
fn setuid_setgid_and_sticky_bits_survive_chown() {
    let layer = Layer::new()
        .file_with("usr/bin/su", b"x", 0o4755, 1000, 1000, 1)
        .file_with("usr/bin/wall", b"y", 0o2755, 0, 5, 1)
        .dir("tmp", 0o1777, 0, 0, 1)
        .finish();
    let s = Scratch::new();
    s.apply(&layer, Compression::None).unwrap();
    let su = fs::metadata(s.path("usr/bin/su")).unwrap();
    assert_eq!(
        (su.mode() & 0o7777, su.uid(), su.gid()),
        (0o4755, 1000, 1000)
    );
    let wall = fs::metadata(s.path("usr/bin/wall")).unwrap();
    assert_eq!((wall.mode() & 0o7777, wall.gid()), (0o2755, 5));
    assert_eq!(fs::metadata(s.path("tmp")).unwrap().mode() & 0o7777, 0o1777);
}

#[test]
fn whiteout_becomes_a_0_0_char_device() {
    let layer = Layer::new()
        .dir("a", 0o755, 0, 0, 1)
        .file("a/keep", b"k")
        .file_with("a/.wh.gone", b"", 0o644, 7, 8, 1)
        .file(".wh.top", b"")
        .file("a/.wh.keep", b"")
        .finish();
    let s = Scratch::new();
    s.apply(&layer, Compression::None).unwrap();
    let gone = fs::symlink_metadata(s.path("a/gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!((gone.rdev(), gone.uid(), gone.gid()), (0, 7, 8));
    assert!(fs::symlink_metadata(s.path("top"))
        .unwrap()
        .file_type()
        .is_char_device());
    // A whiteout hides lower layers only, not this layer's own file.
    assert_eq!(fs::read(s.path("a/keep")).unwrap(), b"k");
    for name in ["a/.wh.gone", ".wh.top", "a/.wh.keep"] {
        assert!(
            fs::symlink_metadata(s.path(name)).is_err(),
            "{name} was created"
        );
    }
}

#[test]
fn opaque_marker_sets_overlay_xattr() {
    let layer = Layer::new()
        .dir("a", 0o755, 0, 0, 1)
        .file("a/.wh..wh..opq", b"")
        .file("b/c/.wh..wh..opq", b"")
        .file("d/.wh..wh.plnk", b"")
        .finish();
    let s = Scratch::new();
    s.apply(&layer, Compression::None).unwrap();
    assert_eq!(
        xattr(&s.path("a"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        xattr(&s.path("b/c"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&s.path("b"), "trusted.overlay.opaque"), None);
    assert!(fs::symlink_metadata(s.path("a/.wh..wh..opq")).is_err());
    assert!(fs::symlink_metadata(s.path("d/.wh..wh.plnk")).is_err());
}

#[test]
fn pax_records_apply_user_xattrs_and_capabilities_only() {
    // vfs_cap_data v2 (effective flag): cap_net_bind_service permitted.
    let cap: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let layer = Layer::new()
        .pax(&[
            ("SCHILY.xattr.user.note", b"hi"),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.user.overlay.opaque", b"y"),
            (
                "SCHILY.xattr.security.selinux",
                b"system_u:object_r:bin_t:s0",
            ),
        ])
        .dir("d", 0o755, 0, 0, 1)
        .pax(&[
            ("SCHILY.xattr.security.capability", &cap),
            ("mtime", b"1234.5"),
        ])
        .file_with("d/ping", b"elf", 0o755, 1000, 1000, 1)
        .finish();
    let s = Scratch::new();
    s.apply(&layer, Compression::None).unwrap();
    assert_eq!(
        xattr(&s.path("d"), "user.note").as_deref(),
        Some(&b"hi"[..])
    );
    assert_eq!(xattr(&s.path("d"), "trusted.overlay.opaque"), None);
    assert_eq!(xattr(&s.path("d"), "user.overlay.opaque"), None);
    assert_ne!(
        xattr(&s.path("d"), "security.selinux").as_deref(),
        Some(&b"system_u:object_r:bin_t:s0"[..])
    );
    assert_eq!(
        xattr(&s.path("d/ping"), "security.capability").as_deref(),
        Some(&cap[..])
    );
    let ping = fs::metadata(s.path("d/ping")).unwrap();
    assert_eq!(
        (ping.uid(), ping.mtime(), ping.mtime_nsec()),
        (1000, 1234, 500_000_000)
    );
}

#[test]
fn parent_dir_components_are_rejected() {
    for name in [
        &b"../escape"[..],
        b"a/../../escape",
        b"./../outside/x",
        b"a/..",
    ] {
        let s = Scratch::new();
        let layer = Layer::new()
            .raw(EntryType::Regular, name, b"", b"pwned")
            .finish();
        let err = s.apply(&layer, Compression::None).unwrap_err();
        assert!(matches!(err, UnpackError::EscapesRoot { .. }), "{err}");
        assert!(err.to_string().contains("escapes the layer root"), "{err}");
        assert!(
            err.to_string()
                .contains(&String::from_utf8_lossy(name).into_owned()),
            "{err}"
        );
        assert!(s.outside_names().is_empty());
        assert_eq!(s.parent_names(), ["dest", "outside"]);
    }
}

#[test]
fn absolute_paths_land_inside() {
    let layer = Layer::new()
        .raw(EntryType::Regular, b"/abs/file", b"", b"in")
        .raw(EntryType::Directory, b"//abs2/./sub/", b"", b"")
        .finish();
    let s = Scratch::new();
    s.apply(&layer, Compression::None).unwrap();
    assert_eq!(fs::read(s.path("abs/file")).unwrap(), b"in");
    assert!(s.path("abs2/sub").is_dir());
}

#[test]
fn root_entry_sets_destination_metadata() {
    let mut root = raw_header(EntryType::Directory, b"./", 0);
    root.set_mode(0o751);
    root.set_mtime(4321);
    root.set_cksum();
    let mut layer = root.as_bytes().to_vec();
    layer.extend(Layer::new().file("x", b"1").finish());
    let s = Scratch::new();
    s.apply(&layer, Compression::None).unwrap();
    let root = fs::metadata(&s.dest).unwrap();
    assert_eq!((root.mode() & 0o7777, root.mtime()), (0o751, 4321));

    let s = Scratch::new();
    let layer = Layer::new()
        .raw(EntryType::Regular, b"/", b"", b"")
        .finish();
    let err = s.apply(&layer, Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::InvalidPath { .. }), "{err}");
}

#[test]
fn writes_never_pass_through_symlinks() {
    type AddEntry = fn(Layer) -> Layer;
    let cases: [(&str, AddEntry); 7] = [
        ("file", |l| {
            l.raw(EntryType::Regular, b"evil/pwned", b"", b"x")
        }),
        ("dir", |l| {
            l.raw(EntryType::Directory, b"evil/sub/", b"", b"")
        }),
        ("nested", |l| {
            l.raw(EntryType::Regular, b"evil/a/b", b"", b"x")
        }),
        ("whiteout", |l| l.file("evil/.wh.x", b"")),
        ("opaque", |l| l.file("evil/.wh..wh..opq", b"")),
        ("symlink", |l| l.symlink("evil/ln", "/")),
        ("fifo", |l| {
            l.special("evil/fifo", EntryType::Fifo, 0, 0, 0o644)
        }),
    ];
    for (what, add) in cases {
        for target in ["abs", "rel"] {
            let s = Scratch::new();
            let target = if target == "abs" {
                s.outside.to_string_lossy().into_owned()
            } else {
                "../outside".to_owned()
            };
            let layer = add(Layer::new().symlink("evil", &target)).finish();
            let err = s.apply(&layer, Compression::None).unwrap_err();
            match &err {
                UnpackError::ThroughSymlink { symlink, .. } => {
                    assert_eq!(symlink, "evil", "{what}")
                }
                other => panic!("{what}: unexpected error {other}"),
            }
            assert!(err.to_string().contains("passes through symlink"), "{err}");
            assert!(s.outside_names().is_empty(), "{what} wrote outside");
            assert_eq!(xattr(&s.outside, "trusted.overlay.opaque"), None);
        }
    }
}

#[test]
fn replacing_a_symlink_does_not_write_through_it() {
    let s = Scratch::new();
    fs::write(s.outside.join("target"), b"host").unwrap();
    let before = fs::metadata(&s.outside).unwrap();
    let target = s.outside.join("target").to_string_lossy().into_owned();
    let outside = s.outside.to_string_lossy().into_owned();
    let layer = Layer::new()
        .symlink("f", &target)
        .file("f", b"layer")
        .symlink("g", &outside)
        .dir("g", 0o700, 9, 9, 1)
        // A directory later replaced by a symlink: its final mtime pass must not follow it.
        .dir("h", 0o700, 9, 9, 1)
        .symlink("h", &outside)
        .finish();
    s.apply(&layer, Compression::None).unwrap();
    assert_eq!(fs::read(s.outside.join("target")).unwrap(), b"host");
    assert!(fs::symlink_metadata(s.path("f")).unwrap().is_file());
    assert_eq!(fs::read(s.path("f")).unwrap(), b"layer");
    assert!(fs::symlink_metadata(s.path("g")).unwrap().is_dir());
    assert!(fs::symlink_metadata(s.path("h")).unwrap().is_symlink());
    let after = fs::metadata(&s.outside).unwrap();
    assert_eq!(
        (after.mode(), after.uid(), after.mtime(), after.mtime_nsec()),
        (
            before.mode(),
            before.uid(),
            before.mtime(),
            before.mtime_nsec()
        )
    );
}

#[test]
fn hardlinks_never_reach_outside() {
    let passwd_links = fs::metadata("/etc/passwd").map(|m| m.nlink()).ok();
    let s = Scratch::new();
    fs::write(s.outside.join("secret"), b"s").unwrap();
    let outside = s.outside.to_string_lossy().into_owned();
    let secret = s.outside.join("secret");

    let escape = Layer::new()
        .raw(EntryType::Link, b"h", b"../outside/secret", b"")
        .finish();
    let err = s.apply(&escape, Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::BadHardLink { .. }), "{err}");
    assert!(
        err.to_string().contains("\"h\"") && err.to_string().contains("../outside/secret"),
        "{err}"
    );

    let s2 = Scratch::new();
    let host = Layer::new()
        .raw(EntryType::Link, b"p", b"/etc/passwd", b"")
        .finish();
    let err = s2.apply(&host, Compression::None).unwrap_err();
    assert!(
        err.to_string().contains("does not exist in the layer"),
        "{err}"
    );
    assert!(fs::symlink_metadata(s2.path("p")).is_err());
    assert_eq!(
        fs::metadata("/etc/passwd").map(|m| m.nlink()).ok(),
        passwd_links
    );

    let s3 = Scratch::new();
    let through = Layer::new()
        .symlink("s", &outside)
        .raw(EntryType::Link, b"x", b"s/secret", b"")
        .finish();
    let err = s3.apply(&through, Compression::None).unwrap_err();
    assert!(
        err.to_string().contains("passes through symlink \"s\""),
        "{err}"
    );

    // Linking to a symlink links the symlink itself.
    let s4 = Scratch::new();
    let to_symlink = Layer::new()
        .symlink("sl", &secret.to_string_lossy())
        .hardlink("hl", "sl")
        .finish();
    s4.apply(&to_symlink, Compression::None).unwrap();
    assert!(fs::symlink_metadata(s4.path("hl"))
        .unwrap()
        .file_type()
        .is_symlink());

    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
    assert_eq!(s.outside_names(), ["secret"]);
}

#[test]
fn device_nodes_are_skipped_unless_enabled() {
    let layer = Layer::new()
        .special("dev/null", EntryType::Char, 1, 3, 0o666)
        .special("dev/loop0", EntryType::Block, 7, 0, 0o660)
        .special("run/fifo", EntryType::Fifo, 0, 0, 0o620)
        .finish();
    let s = Scratch::new();
    s.apply(&layer, Compression::None).unwrap();
    assert!(fs::symlink_metadata(s.path("dev/null")).is_err());
    assert!(fs::symlink_metadata(s.path("dev/loop0")).is_err());
    let fifo = fs::symlink_metadata(s.path("run/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o620);

    let s = Scratch::new();
    let options = UnpackOptions {
        create_device_nodes: true,
        ..Default::default()
    };
    s.apply_with(&layer, Compression::None, &options).unwrap();
    let null = fs::symlink_metadata(s.path("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (null.rdev(), null.mode() & 0o7777),
        (rustix::fs::makedev(1, 3), 0o666)
    );
    let lo = fs::symlink_metadata(s.path("dev/loop0")).unwrap();
    assert!(lo.file_type().is_block_device());
    assert_eq!(lo.rdev(), rustix::fs::makedev(7, 0));
}

#[test]
fn implicit_parent_directories_count_against_the_entry_limit() {
    let deep: String = (0..50).map(|i| format!("d{i}/")).collect();
    let layer = Layer::new().file(&format!("{deep}leaf"), b"x").finish();
    let s = Scratch::new();
    let options = UnpackOptions {
        limits: UnpackLimits {
            max_entries: 10,
            ..Default::default()
        },
        ..Default::default()
    };
    let err = s
        .apply_with(&layer, Compression::None, &options)
        .unwrap_err();
    assert!(
        matches!(err, UnpackError::TooManyEntries { max: 10 }),
        "{err}"
    );
}

#[test]
fn entry_count_limit() {
    let mut layer = Layer::new();
    for i in 0..5 {
        layer = layer.file(&format!("f{i}"), b"");
    }
    let layer = layer.finish();
    let s = Scratch::new();
    let options = UnpackOptions {
        limits: UnpackLimits {
            max_entries: 3,
            ..Default::default()
        },
        ..Default::default()
    };
    let err = s
        .apply_with(&layer, Compression::None, &options)
        .unwrap_err();
    assert!(
        matches!(err, UnpackError::TooManyEntries { max: 3 }),
        "{err}"
    );
    assert!(err.to_string().contains("max_entries"), "{err}");
    assert!(s
        .apply_with(&layer, Compression::None, &UnpackOptions::default())
        .is_ok());
}

#[test]
fn huge_declared_size_is_refused_before_writing() {
    let mut h = raw_header(EntryType::Regular, b"big", 0);
    h.set_size(1 << 40);
    h.set_cksum();
    let mut layer = h.as_bytes().to_vec();
    layer.extend_from_slice(&[7u8; 1024]);
    let s = Scratch::new();
    let err = s.apply(&layer, Compression::None).unwrap_err();
    match err {
        UnpackError::EntryTooLarge {
            ref path,
            size,
            max,
        } => {
            assert_eq!((path.as_str(), size, max), ("big", 1 << 40, 64 << 30));
        }
        ref other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("max_bytes"), "{err}");
    assert!(fs::symlink_metadata(s.path("big")).is_err());
}

#[test]
fn decompressed_byte_limit_stops_a_gzip_bomb() {
    let options = UnpackOptions {
        limits: UnpackLimits {
            max_bytes: 256 << 10,
            ..Default::default()
        },
        ..Default::default()
    };
    // Zeros read as an empty archive followed by padding: all of it is still decompressed.
    let bomb = gzip(&vec![0u8; 4 << 20]);
    let s = Scratch::new();
    let err = s
        .apply_with(&bomb, Compression::Gzip, &options)
        .unwrap_err();
    assert!(
        matches!(err, UnpackError::TooManyBytes { max } if max == 256 << 10),
        "{err}"
    );
    assert!(err.to_string().contains("max_bytes"), "{err}");

    // Many entries, each under the limit, that add up past it.
    let mut layer = Layer::new();
    for i in 0..4 {
        layer = layer.file(&format!("f{i}"), &[1u8; 100 << 10]);
    }
    let s = Scratch::new();
    let err = s
        .apply_with(&gzip(&layer.finish()), Compression::Gzip, &options)
        .unwrap_err();
    assert!(matches!(err, UnpackError::TooManyBytes { .. }), "{err}");
}

#[test]
fn oversized_tar_metadata_is_refused() {
    let size = limits::MAX_METADATA_BYTES + 4096;
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::GNULongName);
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_size(size);
    h.set_cksum();
    let mut layer = h.as_bytes().to_vec();
    layer.resize(layer.len() + size as usize, b'a');
    let s = Scratch::new();
    let err = s.apply(&zstd(&layer), Compression::Zstd).unwrap_err();
    assert!(matches!(err, UnpackError::MetadataTooLarge { .. }), "{err}");
}

#[test]
fn truncated_or_corrupt_streams_are_errors() {
    let layer = Layer::new().file("data", &noise(64 << 10)).finish();
    let gz = gzip(&layer);
    for cut in [gz.len() / 2, gz.len() - 4, 5] {
        let s = Scratch::new();
        let err = s.apply(&gz[..cut], Compression::Gzip).unwrap_err();
        assert!(matches!(err, UnpackError::Corrupt(_)), "cut {cut}: {err}");
        assert!(err.to_string().contains("truncated or corrupt"), "{err}");
    }
    let s = Scratch::new();
    let err = s.apply(&gz[..gz.len() / 2], Compression::Gzip).unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer is truncated or corrupt: unexpected end of gzip stream"
    );

    let zst = zstd(&layer);
    let s = Scratch::new();
    let err = s
        .apply(&zst[..zst.len() / 2], Compression::Zstd)
        .unwrap_err();
    assert!(matches!(err, UnpackError::Corrupt(_)), "{err}");

    for compression in [Compression::Gzip, Compression::Zstd] {
        let s = Scratch::new();
        let err = s.apply(b"", compression).unwrap_err();
        assert!(
            matches!(err, UnpackError::Corrupt(_)),
            "{compression}: {err}"
        );
        let s = Scratch::new();
        let err = s
            .apply(b"definitely not compressed data", compression)
            .unwrap_err();
        assert!(
            matches!(err, UnpackError::Corrupt(_)),
            "{compression}: {err}"
        );
    }

    // Trailing garbage after the gzip member.
    let mut tail = gz.clone();
    tail.extend_from_slice(b"garbage!");
    let s = Scratch::new();
    assert!(matches!(
        s.apply(&tail, Compression::Gzip),
        Err(UnpackError::Corrupt(_))
    ));
}

#[test]
fn uncompressed_stream_cut_inside_an_entry_is_an_error() {
    let layer = Layer::new()
        .file("a", b"first")
        .file("b", &[9u8; 2000])
        .finish();
    let cut = 512 * 3 + 1000; // inside b's data
    let s = Scratch::new();
    let err = s.apply(&layer[..cut], Compression::None).unwrap_err();
    assert!(
        err.to_string()
            .contains("\"b\" ends after 1000 of its 2000 bytes"),
        "{err}"
    );

    let s = Scratch::new();
    let err = s
        .apply(&layer[..512 * 3 + 100], Compression::None)
        .unwrap_err();
    assert!(matches!(err, UnpackError::Corrupt(_)), "{err}");

    // Cut inside a header.
    let s = Scratch::new();
    let err = s
        .apply(&layer[..512 * 2 + 100], Compression::None)
        .unwrap_err();
    assert!(matches!(err, UnpackError::Corrupt(_)), "{err}");

    // Ending between entries, without the end marker, is accepted as tar readers do.
    let whole = Layer::new().file("a", b"first").unterminated();
    let s = Scratch::new();
    let stats = s.apply(&whole, Compression::None).unwrap();
    assert_eq!(stats.entries, 1);
    assert_eq!(fs::read(s.path("a")).unwrap(), b"first");
}

#[test]
fn blob_read_errors_are_reported_as_such() {
    /// Yields `data`, then fails like a dropped download.
    struct Failing(io::Cursor<Vec<u8>>);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.read(buf)? {
                0 => Err(io::Error::other("connection reset")),
                n => Ok(n),
            }
        }
    }
    let layer = Layer::new().file("data", &noise(64 << 10)).finish();
    let gz = gzip(&layer);
    for (compression, data) in [
        (Compression::None, layer[..1000].to_vec()),
        (Compression::Gzip, gz[..gz.len() / 2].to_vec()),
    ] {
        let s = Scratch::new();
        let blob = Failing(io::Cursor::new(data));
        let err = apply_layer(blob, compression, &s.dest, &UnpackOptions::default()).unwrap_err();
        assert!(matches!(err, UnpackError::Read(_)), "{compression}: {err}");
        assert!(err.to_string().contains("connection reset"), "{err}");
    }
}

#[test]
fn all_compressions_give_the_same_tree_and_diff_id() {
    let layer = Layer::new()
        .dir("d", 0o755, 0, 0, 1)
        .file("d/f", &noise(10_000))
        .symlink("d/l", "f")
        .finish();
    let cases = [
        (Compression::None, layer.clone()),
        (Compression::Gzip, gzip(&layer)),
        (Compression::Zstd, zstd(&layer)),
    ];
    for (compression, blob) in cases {
        let s = Scratch::new();
        let stats = s.apply(&blob, compression).unwrap();
        assert_eq!(stats.diff_id, sha256(&layer), "{compression}");
        assert_eq!(fs::read(s.path("d/f")).unwrap(), noise(10_000));
        assert_eq!(stats.entries, 3);
    }
}

#[test]
fn diff_id_covers_everything_after_the_end_marker() {
    let mut layer = Layer::new().file("x", b"x").finish();
    let short = sha256(&layer);
    // Docker pads archives to 10 KiB records.
    layer.resize(layer.len() + 10240, 0);
    for (compression, blob) in [
        (Compression::None, layer.clone()),
        (Compression::Gzip, gzip(&layer)),
    ] {
        let s = Scratch::new();
        let stats = s.apply(&blob, compression).unwrap();
        assert_eq!(stats.diff_id, sha256(&layer));
        assert_ne!(stats.diff_id, short);
    }
    // Two gzip members are one stream.
    let mut two = gzip(&layer[..700]);
    two.extend(gzip(&layer[700..]));
    let s = Scratch::new();
    assert_eq!(
        s.apply(&two, Compression::Gzip).unwrap().diff_id,
        sha256(&layer)
    );
}

#[test]
fn later_entries_replace_earlier_ones() {
    let layer = Layer::new()
        .file("a", b"one")
        .file("a", b"two")
        .symlink("b", "x")
        .file("b", b"file")
        .dir("c", 0o755, 0, 0, 1)
        .file("c/inner/deep", b"i")
        .file("c", b"flat")
        .file("d", b"was a file")
        .dir("d", 0o700, 0, 0, 1)
        .file("e", b"e")
        .symlink("e", "/target")
        .finish();
    let s = Scratch::new();
    s.apply(&layer, Compression::None).unwrap();
    assert_eq!(fs::read(s.path("a")).unwrap(), b"two");
    assert_eq!(fs::read(s.path("b")).unwrap(), b"file");
    assert_eq!(fs::read(s.path("c")).unwrap(), b"flat");
    assert_eq!(
        fs::symlink_metadata(s.path("d")).unwrap().mode() & 0o7777,
        0o700
    );
    assert!(s.path("d").is_dir());
    assert_eq!(fs::read_link(s.path("e")).unwrap(), Path::new("/target"));
}

#[test]
fn a_file_cannot_be_a_parent() {
    let layer = Layer::new().file("f", b"1").file("f/x", b"2").finish();
    let s = Scratch::new();
    let err = s.apply(&layer, Compression::None).unwrap_err();
    assert!(
        matches!(err, UnpackError::ParentNotDirectory { ref parent, .. } if parent == "f"),
        "{err}"
    );
}

#[test]
fn long_names_and_pax_paths() {
    let long = format!("{}/file", "d".repeat(150));
    let layer = Layer::new()
        .file(&long, b"long")
        .pax(&[("path", b"pax/named")])
        .file("ignored", b"pax")
        .finish();
    let s = Scratch::new();
    s.apply(&layer, Compression::None).unwrap();
    assert_eq!(fs::read(s.path(&long)).unwrap(), b"long");
    assert_eq!(fs::read(s.path("pax/named")).unwrap(), b"pax");
    assert!(fs::symlink_metadata(s.path("ignored")).is_err());
}

#[test]
fn empty_and_nul_names_are_rejected() {
    let s = Scratch::new();
    let layer = Layer::new().raw(EntryType::Regular, b"", b"", b"").finish();
    let err = s.apply(&layer, Compression::None).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::InvalidPath {
                reason: "empty name",
                ..
            }
        ),
        "{err}"
    );

    let s = Scratch::new();
    let layer = Layer::new()
        .pax(&[("path", b"a\0b")])
        .file("x", b"")
        .finish();
    let err = s.apply(&layer, Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::InvalidPath { .. }), "{err}");

    let s = Scratch::new();
    let layer = Layer::new().file("a/.wh...", b"").finish();
    let err = s.apply(&layer, Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::EscapesRoot { .. }), "{err}");
}

#[test]
fn unsupported_entry_types_are_rejected() {
    let layer = Layer::new()
        .raw(EntryType::new(b'V'), b"volume", b"", b"")
        .finish();
    let s = Scratch::new();
    let err = s.apply(&layer, Compression::None).unwrap_err();
    assert!(
        matches!(err, UnpackError::UnsupportedEntryType { kind: 'V', .. }),
        "{err}"
    );
}

#[test]
fn missing_destination_is_an_error() {
    let s = Scratch::new();
    let layer = Layer::new().file("x", b"").finish();
    let err = apply_layer(
        layer.as_slice(),
        Compression::None,
        &s.dest.join("nope"),
        &UnpackOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::Destination { .. }), "{err}");
}

#[test]
fn media_types_and_sniffing() {
    use Compression::*;
    for (media_type, expected) in [
        ("application/vnd.oci.image.layer.v1.tar", None),
        ("application/vnd.oci.image.layer.v1.tar+gzip", Gzip),
        ("application/vnd.oci.image.layer.v1.tar+zstd", Zstd),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            None,
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            Gzip,
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
            Zstd,
        ),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", Gzip),
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            Gzip,
        ),
    ] {
        assert_eq!(
            Compression::from_media_type(media_type).unwrap(),
            expected,
            "{media_type}"
        );
    }
    let err = Compression::from_media_type("application/vnd.oci.image.config.v1+json").unwrap_err();
    assert!(matches!(err, UnpackError::UnsupportedMediaType(_)));
    assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Gzip);
    assert_eq!(Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Zstd);
    assert_eq!(Compression::sniff(b"ustar"), None);
    assert_eq!(Compression::sniff(&[0x1f]), None);
    assert_eq!(Compression::sniff(&[]), None);
}

#[test]
fn empty_numeric_fields_read_as_zero() {
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..4].copy_from_slice(b"bare");
    h.set_size(2);
    h.set_cksum();
    let mut layer = h.as_bytes().to_vec();
    layer.extend_from_slice(b"ok");
    layer.resize(1024 + 1024, 0);
    let s = Scratch::new();
    s.apply(&layer, Compression::None).unwrap();
    let bare = fs::metadata(s.path("bare")).unwrap();
    assert_eq!((bare.uid(), bare.mode() & 0o7777, bare.mtime()), (0, 0, 0));
}

#[test]
fn errors_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<UnpackError>();
    send_sync::<LayerStats>();
    send_sync::<UnpackOptions>();
}
