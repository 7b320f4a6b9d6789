//! What happens to AGENTBOX_HOME's store when the disk or the file lets it down: a read-only
//! file system, a damaged or emptied database.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::agents::Agents;
use crate::support::*;

/// On a read-only AGENTBOX_HOME (bound read-only in a mount namespace of its own) agentbox still
/// shows everything; what would change it is refused with the reason.
#[test]
fn a_read_only_home_can_still_be_read() {
    require!("unshare");
    let a = Agents::new(As::Caller);
    a.ok(&["spawn", "ro-run", "--", "sh", "-c", "echo hello; exec sleep 1000"]);
    a.ok(&["spawn", "ro-done", "--", "echo", "done"]);
    a.ok(&["wait", "ro-done"]);
    a.screen_until("ro-run", "hello");
    let bin = &bins().agentbox;
    let h = a.home.display();
    let script = format!(
        "mount --bind {h} {h} && mount -o remount,bind,ro {h} || exit 99
         for verb in list 'logs ro-done' 'info ro-run' history; do {b} $verb || echo \"FAILED: $verb\"; done
         {b} spawn ro-new -- true; echo \"spawn=$?\"",
        b = bin.display()
    );
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .env("AGENTBOX_HOME", &a.home)
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!stdout.contains("FAILED"), "{stdout}{stderr}");
    assert!(stdout.contains("ro-run") && stdout.contains("running") && stdout.contains("done"), "{stdout}");
    assert!(stdout.contains("spawn=1"), "{stdout}");
    assert!(stderr.contains("AGENTBOX_HOME is read-only"), "{stderr}");
}

/// A damaged store is named as such with the way out; `store recover` rebuilds it from the
/// agents' directories (tags and all), the agents come back stopped and start again. An emptied
/// store beside agents' directories is refused, not taken for a new empty one.
#[test]
fn a_damaged_store_is_recovered_from_the_agents_directories() {
    let a = Agents::new(As::Caller);
    a.ok(&["spawn", "rec-1", "--tag", "team=x", "--", "sh", "-c", "echo one; exec sleep 1000"]);
    a.ok(&["spawn", "rec-2", "--", "true"]);
    a.ok(&["wait", "rec-2"]);
    a.ok(&["kill", "rec-1"]);
    let db = a.home.join("state.db");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !host_processes_matching("__supervise rec-").is_empty() {
        assert!(Instant::now() < deadline, "supervisors outlived their agents");
        std::thread::sleep(Duration::from_millis(50));
    }
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::write(&db, b"this is not a database, it is a plant".repeat(200)).unwrap();

    let out = a.run(&["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is damaged") && text(&out.stderr).contains("store recover"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(a.run(&["store", "check"]).status.code(), Some(1));
    assert!(text(&a.run(&["doctor"]).stdout).contains("store recover"));

    let recovered = a.ok(&["store", "recover"]);
    assert!(
        recovered.contains("recovered:  rec-1") && recovered.contains("recovered:  rec-2"),
        "{recovered}"
    );
    assert!(std::fs::read_dir(&a.home).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("damaged")));
    assert_eq!(a.state("rec-1"), "failed");
    assert_eq!(a.ok(&["list", "-q", "--tag", "team=x"]).trim(), "rec-1");
    a.ok(&["restart", "rec-1"]);
    a.screen_until("rec-1", "one");
    a.ok(&["store", "check"]);
    a.ok(&["kill", "rec-1"]);

    // Emptied: refused while agents' directories are there.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !host_processes_matching("__supervise rec-").is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::write(&db, b"").unwrap();
    let out = a.run(&["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is empty, but 2 agent directories"), "{}", text(&out.stderr));
    assert!(a.ok(&["store", "recover"]).contains("recovered:  rec-2"));
    assert_eq!(a.ok(&["list", "-q"]).lines().count(), 2);
}
