//! `--backend vm`: real QEMU (software emulation here, bounded by timeouts), the distribution's
//! kernel fetched by `agentbox vm setup`, the guest agent in the initramfs.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::agents::{attach_on_pty, read_until, Agents};
use crate::egress::{header_values, run_proxied, Upstream, REAL_KEY};
use crate::support::{
    agent_host_id, bins, host_processes, is_root, modes, run_command, run_in, text, workspace, As,
};

/// The guest image shared by every VM test (and test process): set up once, under a lock.
fn vm_ready() {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    let dir = READY.get_or_init(|| {
        let dir = std::env::var_os("AGENTBOX_TEST_VM_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("agentbox-it-vm-cache"));
        std::fs::create_dir_all(&dir).unwrap();
        let lock = std::fs::File::create(dir.join(".lock")).unwrap();
        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map(drop).unwrap();
        if !dir.join("vm/image.json").exists() {
            let home = tempfile::tempdir().unwrap();
            let out = std::process::Command::new(&bins().agentbox)
                .args(["vm", "setup"])
                .env("AGENTBOX_CACHE_DIR", &dir)
                .env("AGENTBOX_HOME", home.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "vm setup: {}{}", text(&out.stdout), text(&out.stderr));
        }
        dir
    });
    std::env::set_var("AGENTBOX_CACHE_DIR", dir);
}

/// `vm status` reports the accelerator and why, and returns (the KVM probe is bounded).
#[test]
fn status_names_the_accelerator() {
    require!("qemu-system-x86_64");
    vm_ready();
    let a = Agents::new(As::Caller);
    let started = Instant::now();
    let out = a.ok(&["vm", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ready"], true, "{out}");
    match v["accel"].as_str() {
        Some("kvm") => {}
        Some("tcg") => assert!(!v["reason"].as_str().unwrap_or("").is_empty(), "{out}"),
        other => panic!("accelerator {other:?}: {out}"),
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    // Every snapshot listed is there, with its size.
    for snap in v["snapshots"].as_array().expect("a list of snapshots") {
        let path = PathBuf::from(snap["path"].as_str().unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), snap["bytes"].as_u64().unwrap(), "{out}");
    }
    let plain = a.ok(&["vm", "status"]);
    assert!(plain.contains("snapshots: "), "{plain}");
    let doctor = a.run(&["doctor"]);
    assert!(text(&doctor.stdout).contains("vm backend"), "{}", text(&doctor.stdout));
}

/// A command runs in the guest's own kernel: its exit status comes back, workspace writes reach
/// the host owned by the sandbox's host id, the host root is read-only, and `none` has no network device.
#[test]
fn run_in_a_vm() {
    require!("qemu-system-x86_64");
    vm_ready();
    for who in modes() {
        let ws = workspace(who);
        let script = format!(
            "set -u; echo kernel=$(uname -r); echo pid1=$(cat /proc/1/cmdline); \
             echo made > {ws}/from-guest.txt; \
             cp /usr/bin/env {ws}/suid; chmod 6755 {ws}/suid 2>/dev/null; \
             touch /usr/agentbox-x 2>/dev/null && echo usr-writable || echo usr-readonly; \
             ls /sys/class/net 2>/dev/null | tr '\\n' ' '; echo; \
             grep -c : /proc/net/dev; \
             test -e /etc/shadow && cat /etc/shadow 2>&1 | head -c 40; echo; exit 7",
            ws = ws.path.display()
        );
        let home = Agents::new(who);
        let out = run_command(who, &ws, &["--backend", "vm", "--memory", "512M"], &["sh", "-c", &script])
            .env("AGENTBOX_HOME", &home.home)
            .output()
            .unwrap();
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(7), "as {who:?}: {stdout}{}", text(&out.stderr));
        let host_kernel = nix::sys::utsname::uname().unwrap().release().to_string_lossy().into_owned();
        assert!(stdout.contains("kernel=") && !stdout.contains(&format!("kernel={host_kernel}")), "{stdout}");
        assert!(stdout.contains("pid1=/init"), "{stdout}");
        assert!(stdout.contains("usr-readonly"), "{stdout}");
        // Only loopback: /proc/net/dev lists `lo` after its two header lines.
        assert!(stdout.lines().any(|l| l.trim() == "1"), "network devices: {stdout}");
        assert!(!stdout.contains("root:"), "{stdout}");
        let made = ws.path.join("from-guest.txt");
        assert_eq!(std::fs::read_to_string(&made).unwrap(), "made\n");
        let owner = std::fs::metadata(&made).unwrap().uid();
        // As root the guest's writes land as agentbox's unprivileged id, never as host root.
        assert_eq!(owner, agent_host_id(who));
        assert!(!PathBuf::from("/usr/agentbox-x").exists());
        // QEMU writes the guest's files from inside the sandbox's seccomp filter: no set-id bits.
        let mode = std::fs::metadata(ws.path.join("suid")).unwrap().mode();
        assert_eq!(mode & 0o6000, 0, "as {who:?}: the guest left a set-id file ({mode:o})");
    }
}

/// Root in the guest (`--uid 0`) cannot read the guest kernel's memory or trace it (the kernel
/// is locked down), and the guest hands freed memory back to the host in small blocks.
#[test]
fn root_in_the_guest_stays_out_of_its_kernel() {
    require!("qemu-system-x86_64");
    vm_ready();
    for who in modes() {
        let ws = workspace(who);
        let script = "echo uid=$(id -u); \
             head -c 16 /proc/kcore >/dev/null 2>&1 && echo kcore-read || echo kcore-refused; \
             mkdir -p /tmp/t /tmp/s; mount -t tracefs none /tmp/t; \
             test -e /tmp/t/events && echo tracing || echo no-tracing; \
             mount -t sysfs none /tmp/s; mount -t securityfs none /tmp/s/kernel/security; \
             echo lockdown=$(cat /tmp/s/kernel/security/lockdown); \
             echo order=$(cat /tmp/s/module/page_reporting/parameters/page_reporting_order)";
        let home = Agents::new(who);
        let out = run_command(
            who,
            &ws,
            &["--backend", "vm", "--memory", "512M", "--uid", "0"],
            &["sh", "-c", script],
        )
        .env("AGENTBOX_HOME", &home.home)
        .output()
        .unwrap();
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "as {who:?}: {stdout}{}", text(&out.stderr));
        for line in
            ["uid=0", "kcore-refused", "no-tracing", "lockdown=none integrity [confidentiality]", "order=5"]
        {
            assert!(stdout.lines().any(|l| l == line), "as {who:?}: no {line} in {stdout}");
        }
    }
}

/// Bad input is refused before anything starts.
#[test]
fn refuses_what_a_vm_cannot_do() {
    require!("qemu-system-x86_64");
    vm_ready();
    let ws = workspace(As::Caller);
    let out = run_in(As::Caller, &ws, &["--backend", "vm", "--network", "full"], &["true"]);
    assert!(
        text(&out.stderr).contains("--backend vm takes --network none or proxy"),
        "{}",
        text(&out.stderr)
    );
    let out = run_in(As::Caller, &ws, &["--backend", "vm", "--memory", "16M"], &["true"]);
    assert!(text(&out.stderr).contains("too small for a virtual machine"), "{}", text(&out.stderr));
    let out = run_in(As::Caller, &ws, &["--backend", "kvm"], &["true"]);
    assert!(text(&out.stderr).contains("unknown backend 'kvm'"), "{}", text(&out.stderr));
    let a = Agents::new(As::Caller);
    let out = a
        .cmd(&["spawn", "nokernel", "--backend", "vm", "--", "sh"])
        .env("AGENTBOX_CACHE_DIR", ws.path.join("empty"))
        .output()
        .unwrap();
    assert!(text(&out.stderr).contains("agentbox vm setup"), "{}", text(&out.stderr));
    assert!(!a.ok(&["list"]).contains("nokernel"), "a refused spawn leaves no agent");
}

fn screen_until(a: &Agents, name: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let s = a.ok(&["screen", name]);
        if s.contains(needle) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "screen never showed {needle:?}:\n{s}\nlogs: {}",
            a.ok(&["logs", name])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A VM agent behaves like any other: screen, send, attach, logs, exec with its exit status,
/// wait; kill leaves no QEMU or helper behind.
#[test]
fn vm_agent_session() {
    require!("qemu-system-x86_64");
    vm_ready();
    let a = Agents::new(As::Caller);
    a.ok(&["spawn", "vm1", "--backend", "vm", "--", "bash", "--norc", "-i"]);
    a.ok(&["send", "vm1", "echo ready-$((6*7))"]);
    screen_until(&a, "vm1", "ready-42");
    assert_eq!(a.state("vm1"), "running");
    // info names the accelerator the VM runs with (known since the first VM started).
    let info = a.ok(&["info", "vm1"]);
    assert!(
        info.contains("backend:     vm, kvm") || info.contains("backend:     vm, tcg (software emulation: "),
        "{info}"
    );
    // This agent's QEMU (its shares lead into this home), not another test's or agent's.
    let home = a.home.to_string_lossy().into_owned();
    let qemu = host_processes(|cmd| cmd.contains("qemu-system") && cmd.contains(&home));
    assert!(!qemu.is_empty());

    // pause stops the guest through QEMU's monitor: a counter in it stands still, and goes on
    // after resume with nothing lost.
    a.ok(&["send", "vm1", "(i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo tick-$i; sleep 0.2; done) &"]);
    screen_until(&a, "vm1", "tick-3");
    a.ok(&["pause", "vm1"]);
    assert_eq!(a.state("vm1"), "paused");
    let ticks = |a: &Agents| a.ok(&["logs", "vm1"]).matches("tick-").count();
    std::thread::sleep(Duration::from_millis(500));
    let before = ticks(&a);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ticks(&a), before, "the guest ran on while paused");
    let journal = a.ok(&["history", "-n", "5"]);
    assert!(journal.contains("guest stopped through QEMU's monitor"), "{journal}");
    a.ok(&["resume", "vm1"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ticks(&a) < before + 3 {
        assert!(Instant::now() < deadline, "the guest did not go on after resume");
        std::thread::sleep(Duration::from_millis(100));
    }
    a.ok(&["send", "vm1", "kill %1; echo stopped-ticking"]);
    screen_until(&a, "vm1", "stopped-ticking");

    // exec runs in the guest, with its own exit status and stdin.
    let out =
        a.cmd(&["exec", "vm1", "--", "sh", "-c", "cat /proc/1/cmdline; echo; exit 5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).starts_with("/init"), "{}", text(&out.stdout));
    let mut child = a
        .cmd(&["exec", "-i", "vm1", "--", "tr", "a-z", "A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "SHOUT\n");

    // attach: the screen is replayed, keys go to the guest's terminal, Ctrl-] detaches.
    let (mut controller, mut master) = attach_on_pty(&a, &["attach", "vm1"]);
    let mut seen = Vec::new();
    read_until(&mut master, &mut seen, "ready-42");
    master.write_all(b"stty size; echo typed-$((2+3))\r").unwrap();
    read_until(&mut master, &mut seen, "typed-5");
    read_until(&mut master, &mut seen, "30 100");
    master.write_all(&[0x1d]).unwrap();
    assert!(controller.wait().unwrap().success());
    assert!(a.ok(&["logs", "vm1"]).contains("typed-5"));

    a.ok(&["kill", "vm1"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while qemu.iter().any(|p| std::path::Path::new(&format!("/proc/{p}")).exists()) {
        assert!(Instant::now() < deadline, "QEMU outlived the kill");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(a.state("vm1"), "killed");

    // An agent that ends by itself: wait returns its status.
    a.ok(&["spawn", "vm2", "--backend", "vm", "--", "sh", "-c", "echo bye; exit 3"]);
    let out = a.run(&["wait", "vm2"]);
    assert_eq!(out.status.code(), Some(3), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(a.ok(&["logs", "vm2"]).contains("bye"));
}

/// `proxy` mode: the guest's only way out is the supervisor's proxy, with the same policy,
/// the secret swapped in toward its host only, and nothing else reachable.
#[test]
fn proxy_is_the_only_way_out() {
    require!("qemu-system-x86_64", "python3", "curl");
    vm_ready();
    let up = Upstream::start();
    let script = r#"
curl -sS --fail http://plain.test/echo; echo
curl -sS --fail -H "x-api-key: $ANTHROPIC_API_KEY" https://api.anthropic.com/echo; echo
curl -sS http://evil.test/ 2>&1 | head -c 300; echo
curl -sS --noproxy '*' --connect-timeout 3 http://10.0.2.2:80/ >/dev/null 2>&1 && echo direct-open || echo direct-refused
echo key=$ANTHROPIC_API_KEY
"#;
    let out = run_proxied(
        As::Caller,
        &up,
        &["--backend", "vm", "--secret", "ANTHROPIC_API_KEY", "--allow", "plain.test"],
        script,
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("{\"ok\": true}"), "{stdout}");
    assert!(stdout.contains("evil.test"), "the refusal names the host: {stdout}");
    assert!(stdout.contains("direct-refused"), "{stdout}");
    assert!(stdout.contains("key=agentbox-placeholder-"), "{stdout}");
    assert!(!stdout.contains(REAL_KEY) && !stderr.contains(REAL_KEY), "the guest saw the real key");
    let reqs = up.requests();
    assert_eq!(header_values(&reqs, "api.anthropic.com", "x-api-key"), vec![REAL_KEY.to_string()]);
    assert!(!reqs.iter().any(|r| r.to_string().contains("evil.test")));
}

/// A private copy of the shared guest image (kernel, modules, the accelerator's answer), so a
/// test may break its snapshots without touching other tests'.
fn private_cache() -> tempfile::TempDir {
    vm_ready();
    let shared = PathBuf::from(std::env::var_os("AGENTBOX_CACHE_DIR").unwrap()).join("vm");
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("cp").arg("-a").arg(&shared).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(dir.path().join("vm/snapshots"));
    // Readable by the unprivileged test user; its snapshots then go to its own AGENTBOX_HOME.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir
}

/// VM agents start from a saved machine: made once per machine layout, restored by every later
/// VM (whose guest kernel still carries the parameter it was booted with for the snapshot), each
/// with its own clock and random numbers; a snapshot that cannot be restored makes the VM boot
/// instead, saying why.
#[test]
fn vm_agents_start_from_a_saved_machine() {
    require!("qemu-system-x86_64");
    for who in modes() {
        let cache = private_cache();
        let home = Agents::new(who);
        let ws = workspace(who);
        let script = "cat /proc/cmdline; date +clock=%s; echo uuid=$(cat /proc/sys/kernel/random/uuid); \
                      echo urandom=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'); \
                      echo hi > $PWD/from-guest; exit 4";
        let run = |label: &str| {
            let out = run_command(who, &ws, &["--backend", "vm", "--memory", "512M"], &["sh", "-c", script])
                .env("AGENTBOX_HOME", &home.home)
                .env("AGENTBOX_CACHE_DIR", cache.path())
                .output()
                .unwrap();
            let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
            assert_eq!(out.status.code(), Some(4), "{label} as {who:?}: {stdout}{stderr}");
            (stdout, stderr)
        };
        let field = |out: &str, key: &str| -> String {
            out.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {out}"))
                .trim()
                .into()
        };
        // The first VM of this layout waits for the snapshot to be made, then is restored.
        let (first, said) = run("first");
        assert!(said.contains("saved the VM's machine"), "as {who:?}: {said}");
        // The person waiting is told why this first one takes longer.
        assert!(said.contains("boots once and saves the machine"), "as {who:?}: {said}");
        assert!(first.contains("agentbox.template"), "as {who:?}: not restored: {first}");
        // Beside the image when that is this user's own directory, in AGENTBOX_HOME otherwise.
        let snapshots: Vec<PathBuf> = [cache.path().join("vm/snapshots"), home.home.join("vm/snapshots")]
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "state"))
            .collect();
        assert_eq!(snapshots.len(), 1, "as {who:?}: {snapshots:?}");
        // No other user reads it: the user's own file, or root's in the group root's
        // sandboxes run as (which QEMU's needs, and which owns nothing it could reopen).
        let meta = std::fs::metadata(&snapshots[0]).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
        if who == As::Caller && is_root() {
            assert_eq!((mode, meta.uid(), meta.gid()), (0o440, 0, agentbox_core::ROOT_AGENT_ID));
        } else {
            assert_eq!((mode, meta.uid()), (0o400, agent_host_id(who)), "as {who:?}");
        }
        if is_root() {
            // The file itself refuses a third user (its directory may be open to them).
            let peek = std::process::Command::new("setpriv")
                .args(["--reuid=65533", "--regid=65533", "--clear-groups", "head", "-c1"])
                .arg(&snapshots[0])
                .output()
                .unwrap();
            assert!(!peek.status.success(), "as {who:?}: another user read the snapshot");
            let dir_open = std::process::Command::new("setpriv")
                .args(["--reuid=65533", "--regid=65533", "--clear-groups", "test", "-x"])
                .arg(snapshots[0].parent().unwrap())
                .status()
                .unwrap()
                .success();
            if dir_open {
                assert!(text(&peek.stderr).contains("Permission denied"), "{}", text(&peek.stderr));
            }
        }
        // Later VMs are restored from it without making another; the guest's clock is the
        // host's, not the snapshot's (a few seconds old by now).
        std::thread::sleep(Duration::from_secs(3));
        let before =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let (second, said) = run("second");
        assert!(
            !said.contains("saved the VM's machine") && !said.contains("could not be restored"),
            "{said}"
        );
        assert!(second.contains("agentbox.template"), "as {who:?}: not restored: {second}");
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let clock: i64 = field(&second, "clock=").parse().unwrap();
        assert!(
            clock >= before && clock <= now,
            "the guest's clock is not the host's: {clock} vs {before}..{now}"
        );
        for key in ["uuid=", "urandom="] {
            assert_ne!(field(&first, key), field(&second, key), "two restored guests share their {key}");
        }
        assert_eq!(std::fs::read_to_string(ws.path.join("from-guest")).unwrap(), "hi\n");

        // A snapshot that is not a machine: the VM boots instead, and says why.
        let state = &snapshots[0];
        let mut bytes = std::fs::read(state).unwrap();
        bytes[..4].copy_from_slice(b"XXXX");
        std::fs::set_permissions(state, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::write(state, &bytes).unwrap();
        let (cold, said) = run("corrupt");
        assert!(said.contains("the VM's snapshot could not be restored"), "as {who:?}: {said}");
        assert!(said.contains("booting the guest instead"), "{said}");
        assert!(!cold.contains("agentbox.template"), "as {who:?}: {cold}");
        // Remembered: the next VM of this layout boots at once rather than trying it again,
        // and says why.
        let (cold, said) = run("after a failed restore");
        assert!(!said.contains("the VM's snapshot could not be restored"), "as {who:?}: tried again: {said}");
        assert!(
            said.contains("no VM snapshot (the last VM restored from it did not start"),
            "as {who:?}: {said}"
        );
        assert!(!cold.contains("agentbox.template"), "as {who:?}: {cold}");

        // `spawn` of another machine layout: the supervisor makes its snapshot, and says so
        // through spawn, before the agent starts from it. With a volume besides its home and
        // workspace, it has more share slots than the runs above; its template is made without
        // the volume, but with the slots, and the guest writes through the third one.
        if who == As::Caller {
            let volume = workspace(who);
            let out = home
                .cmd(&[
                    "spawn",
                    "big",
                    "--backend",
                    "vm",
                    "--memory",
                    "640M",
                    "-v",
                    &format!("{}:/mnt/volume", volume.path.display()),
                    "--",
                    "sh",
                    "-c",
                    "cat /proc/cmdline; echo through-slot-3 > /mnt/volume/f; sleep 600",
                ])
                .env("AGENTBOX_CACHE_DIR", cache.path())
                .output()
                .unwrap();
            let said = text(&out.stderr);
            assert!(out.status.success(), "{said}");
            assert!(said.contains("boots once and saves the machine"), "{said}");
            let deadline = Instant::now() + Duration::from_secs(120);
            while !home.ok(&["logs", "big"]).contains("agentbox.template") {
                assert!(Instant::now() < deadline, "not restored: {}", home.ok(&["logs", "big"]));
                std::thread::sleep(Duration::from_millis(100));
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::fs::read_to_string(volume.path.join("f")).ok().as_deref() != Some("through-slot-3\n") {
                assert!(
                    Instant::now() < deadline,
                    "nothing written to the volume: {}",
                    home.ok(&["logs", "big"])
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            home.ok(&["kill", "big"]);
        }
    }
}
