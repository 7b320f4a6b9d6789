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

/// Peak memory of this test's children so far, in KiB.
fn children_max_rss_kib() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the pointer it is given.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: getrusage succeeded, so it filled the struct.
    #[allow(unsafe_code)]
    let usage = unsafe { usage.assume_init() };
    usage.ru_maxrss
}

/// A huge log costs `logs -n` what its last lines do: 2 GiB read from the end in bounded memory.
#[test]
fn the_last_lines_of_a_huge_log_are_read_from_its_end() {
    let a = Agents::new(As::Caller);
    a.ok(&["spawn", "huge", "--", "true"]);
    a.ok(&["wait", "huge"]);
    let log = a.dir("huge").join("log");
    let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    // 2 GiB of which the end is lines (sparse before: no disk is used for the test).
    f.set_len(2 << 30).unwrap();
    drop(f);
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    use std::io::Write;
    for i in 0..100 {
        // As a terminal writes it: CR LF.
        write!(f, "line {i}\r\n").unwrap();
    }
    drop(f);
    let before = children_max_rss_kib();
    let started = Instant::now();
    let out = a.ok(&["logs", "huge", "-n", "3"]);
    assert_eq!(out, "line 97\nline 98\nline 99\n");
    let rss = children_max_rss_kib();
    assert!(rss < 64 * 1024 || rss == before, "logs -n used {rss} KiB");
    assert!(started.elapsed() < Duration::from_secs(60), "logs -n took {:?}", started.elapsed());
}

/// With `[logs] max_size`, an agent's log and its one rotated file hold at most that, the
/// newest output included; a flood does not grow the supervisor, and `screen` answers meanwhile.
#[test]
fn logs_are_capped_and_a_flood_does_not_grow_the_supervisor() {
    let a = Agents::new(As::Caller);
    std::fs::write(a.home.join("config.toml"), "[logs]\nmax_size = \"1M\"\n").unwrap();
    // 200 MB as fast as the terminal takes it: more than the screen model parses meanwhile.
    let script =
        "head -c 200000000 /dev/zero | tr '\\0' x | fold -w 120; echo; echo flood-done; exec sleep 1000";
    a.ok(&["spawn", "flood", "--", "sh", "-c", script]);
    let started = Instant::now();
    let mut peak_kib: u64;
    let sup = {
        let v: serde_json::Value = serde_json::from_str(&a.ok(&["info", "flood", "--json"])).unwrap();
        v["agent"]["supervisor_pid"].as_i64().unwrap()
    };
    loop {
        let status = std::fs::read_to_string(format!("/proc/{sup}/status")).unwrap();
        let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        peak_kib = hwm.split_whitespace().nth(1).unwrap().parse().unwrap();
        let screen = a.ok(&["screen", "flood"]);
        if screen.contains("flood-done") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the flood never ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(peak_kib < 100 * 1024, "the supervisor grew to {peak_kib} KiB");
    let cur = std::fs::metadata(a.dir("flood").join("log")).unwrap().len();
    let old = std::fs::metadata(a.dir("flood").join("log.1")).unwrap().len();
    assert!(cur + old <= 1 << 20, "{cur} + {old} bytes kept");
    assert!(a.ok(&["logs", "flood", "-n", "1"]).contains("flood-done"));
}

/// A full disk makes the agent wait instead of losing its output: nothing is lost, the end and
/// its exit code are recorded once space returns, and the journal says what happened. Needs root
/// (a small tmpfs as AGENTBOX_HOME, mounted in a mount namespace of the test's own).
#[test]
fn a_full_disk_pauses_the_agent_and_loses_nothing() {
    require!("unshare");
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let b = bins().agentbox.display().to_string();
    let h = home.display();
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=16m tmpfs {h} || exit 99
export AGENTBOX_HOME={h}
{b} list >/dev/null
head -c 14000000 /dev/zero > {h}/filler
{b} spawn full -- sh -c 'i=0; while [ $i -lt 150000 ]; do echo "line $i and some padding for the disk"; i=$((i+1)); done; echo the-end; exit 3' || exit 98
sleep 3
echo "state-while-full: $({b} list | awk '/^full/ {{print $2}}')"
{b} list >/dev/null && echo "list-works"
rm {h}/filler
{b} wait full; echo "exit=$?"
echo "lines=$({b} logs full | grep -c '^line ')"
{b} logs full -n 1
{b} history -n 50 | grep -oE 'disk-(full|ok)' | sort -u
"#
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stdout.contains("state-while-full: running"), "{stdout}{stderr}");
    assert!(stdout.contains("list-works"), "{stdout}{stderr}");
    assert!(stdout.contains("exit=3"), "{stdout}{stderr}");
    assert!(stdout.contains("lines=150000"), "output was lost: {stdout}{stderr}");
    assert!(stdout.contains("the-end"), "{stdout}");
    assert!(stdout.contains("disk-full") && stdout.contains("disk-ok"), "{stdout}");
}
