//! Threat model row "resources": limits hold, or agentbox refuses with the reason.

use crate::support::*;

#[test]
fn fork_bomb_is_contained() {
    for who in modes() {
        let out = attack(who, &["--pids", "32"], &["fork-bomb", "400"]);
        let stdout = text(&out.stdout);
        let forked: usize = stdout
            .strip_prefix("FORKED ")
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("as {who:?}: {stdout} {}", text(&out.stderr)));
        assert!(forked < 32, "as {who:?}: forked {forked} processes under --pids 32");
    }
}

#[test]
fn memory_hog_is_contained() {
    for who in modes() {
        let out = attack(who, &["--memory", "64M"], &["memory-hog", "512"]);
        let stdout = text(&out.stdout);
        let killed = out.status.code() == Some(137);
        let refused = out.status.code() == Some(0) && stdout.contains("BLOCKED");
        assert!(killed || refused, "as {who:?}: status {:?}\n{stdout}", out.status);
        let max = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("ALLOCATED ")?.parse::<u32>().ok())
            .max()
            .unwrap_or(0);
        assert!(max <= 64, "as {who:?}: allocated {max} MiB under --memory 64M");
    }
}

#[test]
fn cpu_limit_is_enforced_or_refused() {
    for who in modes() {
        let ws = workspace(who);
        let out = run_in(who, &ws, &["--cpus", "0.2"], &[PROBE, "busy", "1.5"]);
        if who == As::Caller && is_root() {
            let used: f64 =
                text(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
            // 0.2 cores for 1.5 s is 0.3 s of CPU; a busy loop without the limit would use 1.5 s.
            assert!(used < 0.75, "used {used} s of CPU under --cpus 0.2");
        } else {
            assert_eq!(out.status.code(), Some(125));
            assert!(text(&out.stderr).contains("cannot enforce --cpus"), "{}", text(&out.stderr));
        }
    }
}

#[test]
fn cgroup_is_removed_after_the_run() {
    if !is_root() {
        return;
    }
    let ws = workspace(As::Caller);
    let out = run_in(As::Caller, &ws, &["--verbose", "--pids", "50", "--memory", "256M"], &["true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let dirs: Vec<&str> = stderr.lines().filter_map(|l| l.split(": cgroup ").nth(1)).collect();
    assert!(!dirs.is_empty(), "{stderr}");
    for d in dirs {
        assert!(!std::path::Path::new(d).exists(), "{d} left behind");
    }
}

/// The sandbox's cgroups are its cgroup namespace's root: its command sees `/` in every
/// hierarchy, never the host's cgroup paths. With limits, the sandbox is moved into its cgroups
/// while its child builds the root, and makes them its namespace's root only once moved: a
/// namespace made before the move would show `/agentbox-...` here.
#[test]
fn the_sandbox_sees_its_own_cgroups_as_the_root() {
    for who in modes() {
        let ws = workspace(who);
        let out = run_in(who, &ws, &["--memory", "256M", "--pids", "64"], &["cat", "/proc/self/cgroup"]);
        let seen = text(&out.stdout);
        assert!(out.status.success() && !seen.is_empty(), "as {who:?}: {seen} {}", text(&out.stderr));
        for line in seen.lines() {
            assert!(line.ends_with(":/"), "as {who:?}: the sandbox sees a host cgroup path: {line}\n{seen}");
        }
    }
}
