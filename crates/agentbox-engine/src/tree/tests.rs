#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

fn write(p: &Path, s: &str) {
    std::fs::write(p, s).unwrap();
}

#[test]
fn copies_files_dirs_and_links_without_following_or_set_id_bits() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("sub/deep")).unwrap();
    write(&src.join("a"), "alpha");
    write(&src.join("sub/deep/b"), "beta");
    write(&d.path().join("secret"), "SECRET");
    std::os::unix::fs::symlink(d.path().join("secret"), src.join("link")).unwrap();
    std::os::unix::fs::symlink("/", src.join("sub/root")).unwrap();
    std::fs::set_permissions(src.join("a"), std::fs::Permissions::from_mode(0o6755)).unwrap();
    std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o2755)).unwrap();
    nix::unistd::mkfifo(&src.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();

    let dst = d.path().join("dst");
    let stats = copy_tree(&src, &dst, &CopyOptions::default()).unwrap();
    assert_eq!(std::fs::read_to_string(dst.join("a")).unwrap(), "alpha");
    assert_eq!(std::fs::read_to_string(dst.join("sub/deep/b")).unwrap(), "beta");
    assert_eq!(std::fs::read_link(dst.join("link")).unwrap(), d.path().join("secret"));
    assert!(std::fs::symlink_metadata(dst.join("link")).unwrap().file_type().is_symlink());
    assert!(!dst.join("fifo").exists());
    assert_eq!(std::fs::metadata(dst.join("a")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::metadata(dst.join("sub")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!((stats.files, stats.links, stats.skipped), (2, 2, 1));
    // The destination must be new: nothing an agent made is written into.
    assert!(matches!(copy_tree(&src, &dst, &CopyOptions::default()), Err(TreeError::Exists { .. })));
}

#[test]
fn sparse_files_stay_sparse_and_budgets_hold() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let f = std::fs::File::create(src.join("sparse")).unwrap();
    f.set_len(1 << 30).unwrap();
    {
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"middle", 1 << 29).unwrap();
    }
    drop(f);
    let dst = d.path().join("dst");
    let stats = copy_tree(&src, &dst, &CopyOptions::default()).unwrap();
    let m = std::fs::metadata(dst.join("sparse")).unwrap();
    assert_eq!(m.len(), 1 << 30);
    assert!(m.blocks() * 512 < 1 << 20, "copy used {} bytes of disk", m.blocks() * 512);
    assert!(stats.bytes < 1 << 20);
    let mut buf = [0u8; 6];
    use std::os::unix::fs::FileExt;
    std::fs::File::open(dst.join("sparse")).unwrap().read_exact_at(&mut buf, 1 << 29).unwrap();
    assert_eq!(&buf, b"middle");

    // Data beyond the budget is refused with the path named.
    write(&src.join("big"), &"x".repeat(100_000));
    let opts = CopyOptions { limits: Limits { max_bytes: 50_000, max_entries: 100 }, ..Default::default() };
    let err = copy_tree(&src, &d.path().join("dst2"), &opts).unwrap_err();
    assert!(matches!(err, TreeError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("big"), "{err}");
    let opts = CopyOptions { limits: Limits { max_bytes: u64::MAX, max_entries: 1 }, ..Default::default() };
    assert!(matches!(copy_tree(&src, &d.path().join("dst3"), &opts), Err(TreeError::TooMany { .. })));
}

/// A file swapped with a symlink to a secret in a tight loop (RENAME_EXCHANGE) while the copy
/// runs: the copy holds the file's content, a link, or nothing, never the secret's content.
#[test]
fn a_file_swapped_for_a_link_mid_copy_never_copies_the_target() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write(&d.path().join("secret"), "SECRET-CONTENT");
    write(&src.join("a"), "harmless");
    std::os::unix::fs::symlink(d.path().join("secret"), src.join("b")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, src) = (stop.clone(), src.clone());
        std::thread::spawn(move || {
            let dir = nix::fcntl::open(&src, nix::fcntl::OFlag::O_DIRECTORY, nix::sys::stat::Mode::empty())
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = nix::fcntl::renameat2(&dir, "a", &dir, "b", nix::fcntl::RenameFlags::RENAME_EXCHANGE);
            }
        })
    };
    for i in 0..300 {
        let dst = d.path().join(format!("dst{i}"));
        copy_tree(&src, &dst, &CopyOptions::default()).unwrap();
        for name in ["a", "b"] {
            if let Ok(text) = std::fs::read_to_string(dst.join(name)) {
                let is_link = std::fs::symlink_metadata(dst.join(name)).unwrap().file_type().is_symlink();
                assert!(is_link || text == "harmless", "round {i}: {name} holds {text:?}");
            }
        }
        remove_tree(&dst).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
}

#[test]
fn remove_opens_up_locked_dirs_and_never_follows_links() {
    let d = tempfile::tempdir().unwrap();
    let outside = d.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    write(&outside.join("keep"), "keep");
    let t = d.path().join("t");
    std::fs::create_dir_all(t.join("locked/inner")).unwrap();
    write(&t.join("locked/inner/f"), "x");
    std::os::unix::fs::symlink(&outside, t.join("link")).unwrap();
    std::os::unix::fs::symlink(&outside, t.join("locked/link")).unwrap();
    std::fs::set_permissions(t.join("locked/inner"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(t.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    remove_tree(&t).unwrap();
    assert!(!t.exists());
    assert_eq!(std::fs::read_to_string(outside.join("keep")).unwrap(), "keep");
    remove_tree(&t).unwrap(); // already gone
}

#[test]
fn walk_sees_links_as_links_and_never_blocks_on_a_fifo() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("w");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    write(&root.join("sub/f"), "data");
    std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
    nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let mut seen = Vec::new();
    walk(&root, Limits::UNLIMITED, &mut |e| {
        let content = match e.kind {
            Kind::File => e.open()?.map(|f| std::io::read_to_string(f).unwrap()),
            Kind::Symlink => e.link_target()?.map(|t| t.to_string_lossy().into_owned()),
            _ => None,
        };
        seen.push((e.rel.to_string_lossy().into_owned(), e.kind, content));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        seen,
        vec![
            ("etc".into(), Kind::Symlink, Some("/etc".into())),
            ("fifo".into(), Kind::Other, None),
            ("sub".into(), Kind::Dir, None),
            ("sub/f".into(), Kind::File, Some("data".into())),
        ]
    );
}

#[test]
fn paths_beneath_a_tree_cannot_leave_it() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("r");
    std::fs::create_dir_all(root.join("dir")).unwrap();
    write(&root.join("dir/f"), "x");
    write(&d.path().join("secret"), "s");
    std::os::unix::fs::symlink(d.path().join("secret"), root.join("dir/l")).unwrap();
    std::os::unix::fs::symlink(d.path(), root.join("up")).unwrap();
    let dir = Dir::open(&root).unwrap();
    assert!(matches!(dir.open_beneath(Path::new("dir/f")).unwrap(), Some((_, Kind::File))));
    assert!(matches!(dir.open_beneath(Path::new("dir")).unwrap(), Some((_, Kind::Dir))));
    assert!(dir.open_beneath(Path::new("dir/l")).unwrap().is_none());
    assert!(dir.open_beneath(Path::new("up/secret")).unwrap().is_none());
    for bad in ["../secret", "/etc/passwd", "", "dir/../../secret"] {
        assert!(
            dir.open_beneath(Path::new(bad)).is_err() || dir.open_beneath(Path::new(bad)).unwrap().is_none(),
            "{bad}"
        );
    }
    assert!(matches!(dir.open_beneath(Path::new("../x")), Err(TreeError::NotBeneath { .. })));
    let _ = OsStr::new("");
}

#[test]
fn chown_reowns_a_tree_without_following_links() {
    if !nix::unistd::geteuid().is_root() {
        return; // only root may give files away
    }
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("t");
    std::fs::create_dir_all(t.join("a")).unwrap();
    write(&t.join("a/f"), "x");
    write(&d.path().join("outside"), "o");
    std::os::unix::fs::symlink(d.path().join("outside"), t.join("a/l")).unwrap();
    chown_tree(&t, Owner { uid: 4242, gid: 4343 }).unwrap();
    for p in ["", "a", "a/f"] {
        let m = std::fs::metadata(t.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (4242, 4343), "{p}");
    }
    assert_eq!(std::fs::symlink_metadata(t.join("a/l")).unwrap().uid(), 4242);
    assert_eq!(std::fs::metadata(d.path().join("outside")).unwrap().uid(), 0);
}
