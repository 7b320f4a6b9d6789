//! Threat model rows "host files", "agentbox itself" and "other agents": what the sandbox can read and write.

use std::os::unix::fs::symlink;

use crate::support::*;

#[test]
fn host_home_secrets_are_invisible() {
    for who in modes() {
        // A home directory with an SSH key, passed as HOME to agentbox.
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".ssh")).unwrap();
        let key = home.path().join(".ssh/id_ed25519");
        std::fs::write(&key, "PRIVATE KEY canary").unwrap();
        let ws = workspace(who);
        let out = run_in(who, &ws, &[], &[PROBE, "read", key.to_str().unwrap()]);
        assert_blocked(who, &out);
        // Nor through the sandbox's $HOME, which is a private, empty directory.
        let out = run_in(who, &ws, &[], &["sh", "-c", "ls -A \"$HOME\"; echo HOME=$HOME"]);
        assert_eq!(text(&out.stdout), "HOME=/home/agent\n", "as {who:?}");
        for p in ["/root/.bashrc", "/root/.ssh", "/home"] {
            let out = run_in(
                who,
                &ws,
                &[],
                &["sh", "-c", &format!("ls -A {p} 2>/dev/null | grep -v '^agent$' ; true")],
            );
            assert_eq!(text(&out.stdout), "", "as {who:?}: {p} shows host content");
        }
    }
}

#[test]
fn etc_secrets_are_unreadable_even_for_root() {
    for who in modes() {
        for secret in ["/etc/shadow", "/etc/gshadow"] {
            assert!(std::path::Path::new(secret).exists());
            assert_blocked(who, &attack(who, &[], &["read", secret]));
        }
        for entry in std::fs::read_dir("/etc/ssh").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("ssh_host_") && name.ends_with("_key") {
                assert_blocked(who, &attack(who, &[], &["read", entry.path().to_str().unwrap()]));
            }
        }
        // Ordinary system files stay readable.
        let out = attack(who, &[], &["read", "/etc/passwd"]);
        assert_eq!(out.status.code(), Some(1), "as {who:?}: /etc/passwd should be readable");
    }
}

#[test]
fn writes_outside_the_workspace_fail_and_leave_the_host_unchanged() {
    for who in modes() {
        let outside = tempfile::tempdir().unwrap();
        if who == As::Nobody {
            std::os::unix::fs::chown(outside.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let target = outside.path().join("pwned");
        for path in [
            target.to_str().unwrap().to_string(),
            "/etc/agentbox-pwned".into(),
            "/usr/agentbox-pwned".into(),
            "/agentbox-pwned".into(),
            "/proc/self/root/etc/agentbox-pwned".into(),
            "/proc/1/root/etc/agentbox-pwned".into(),
            format!("/proc/self/root{}", target.display()),
            "/proc/sys/kernel/hostname".into(),
            "/proc/sysrq-trigger".into(),
        ] {
            assert_blocked(who, &attack(who, &[], &["write", &path]));
        }
        assert!(!target.exists(), "as {who:?}: host file was created");
        assert!(!std::path::Path::new("/etc/agentbox-pwned").exists());
        assert!(!std::path::Path::new("/usr/agentbox-pwned").exists());
    }
}

#[test]
fn workspace_writes_reach_the_host() {
    for who in modes() {
        let ws = workspace(who);
        let out =
            run_in(who, &ws, &[], &["sh", "-c", "echo hello > made-inside && mkdir -p d/e && touch d/e/f"]);
        assert_eq!(out.status.code(), Some(0), "as {who:?}: {}", text(&out.stderr));
        assert_eq!(std::fs::read_to_string(ws.path.join("made-inside")).unwrap(), "hello\n");
        assert!(ws.path.join("d/e/f").exists());
    }
}

#[test]
fn planted_symlinks_and_hard_links_do_not_escape() {
    for who in modes() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "canary").unwrap();
        let ws = workspace(who);
        // Links planted in the workspace (by an earlier run of the agent) point at host paths.
        symlink(outside.path(), ws.path.join("escape-dir")).unwrap();
        symlink(&secret, ws.path.join("escape-file")).unwrap();
        symlink("/", ws.path.join("escape-root")).unwrap();
        let probe = |args: &[&str]| {
            let mut argv = vec![PROBE];
            argv.extend_from_slice(args);
            run_in(who, &ws, &[], &argv)
        };
        let ws_s = ws.path.to_str().unwrap();
        assert_blocked(who, &probe(&["read", &format!("{ws_s}/escape-file")]));
        assert_blocked(who, &probe(&["write", &format!("{ws_s}/escape-dir/new")]));
        assert_blocked(who, &probe(&["write", &format!("{ws_s}/escape-root/etc/pwned")]));
        // Hard links across mounts are refused, so nothing outside can be linked in and written.
        assert_blocked(who, &probe(&["link", "/etc/passwd", &format!("{ws_s}/passwd-link")]));
        assert_blocked(who, &probe(&["link", "/tmp", &format!("{ws_s}/tmp-link")]));
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "canary");
        assert!(!outside.path().join("new").exists());
    }
}

#[test]
fn mount_targets_do_not_follow_planted_symlinks() {
    // A --mount whose target passes through a symlink in the workspace must not be redirected.
    let who = As::Caller;
    let ws = workspace(who);
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), ws.path.join("link")).unwrap();
    let data = tempfile::tempdir().unwrap();
    let target = format!("{}/link/data", ws.path.display());
    let out = run_in(who, &ws, &["--mount", &format!("{}:{target}:ro", data.path().display())], &["true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("symlink"), "{}", text(&out.stderr));
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "mount point created outside");
}

#[test]
fn another_sandboxes_workspace_is_invisible() {
    for who in modes() {
        let a = workspace(who);
        let b = workspace(who);
        std::fs::write(b.path.join("b-secret"), "canary").unwrap();
        let out = run_in(who, &a, &[], &[PROBE, "read", b.path.join("b-secret").to_str().unwrap()]);
        assert_blocked(who, &out);
    }
}

#[test]
fn read_only_mounts_are_read_only() {
    for who in modes() {
        let ws = workspace(who);
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("f"), "data").unwrap();
        let owner = agent_host_id(who);
        std::os::unix::fs::chown(data.path(), Some(owner), Some(owner)).unwrap();
        std::os::unix::fs::chown(data.path().join("f"), Some(owner), Some(owner)).unwrap();
        let flag = format!("{}:/mnt/data:ro", data.path().display());
        let out = run_in(who, &ws, &["--mount", &flag], &["cat", "/mnt/data/f"]);
        assert_eq!(text(&out.stdout), "data", "as {who:?}: {}", text(&out.stderr));
        assert_blocked(who, &run_in(who, &ws, &["--mount", &flag], &[PROBE, "write", "/mnt/data/f"]));
        let rw = format!("{}:/mnt/data", data.path().display());
        let out = run_in(who, &ws, &["--mount", &rw], &["sh", "-c", "echo new > /mnt/data/f"]);
        assert_eq!(out.status.code(), Some(0), "as {who:?}: {}", text(&out.stderr));
        assert_eq!(std::fs::read_to_string(data.path().join("f")).unwrap(), "new\n");
    }
}
