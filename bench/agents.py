#!/usr/bin/env python3
"""Agent benchmarks, each a ratio against a reference measured in the same run.

1. spawn latency: `agentbox spawn X -- sleep 1000` (returns once the command runs in its sandbox)
   vs `tmux new-session -d` + `pipe-pane` on an already running tmux server.
2. output throughput: a command writing BYTES through an agent's PTY into its log, vs the same
   command under `script` (util-linux: a plain PTY relay into a file) and under tmux + pipe-pane.
3. density: N idle agents (`sleep infinity`): memory per agent with all processes counted (PSS and
   RSS of supervisor + sandbox init + command), and the time to spawn them all.

Usage: bench/agents.py [--spawns 30] [--gap SECONDS] [--bytes 200000000] [--rounds 3] [--density 1000]
Needs: tmux, util-linux (script), a release build (the script builds it).
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_BUILD_TARGET", "x86_64-unknown-linux-gnu")
BUILT = os.path.join(ROOT, "target", TARGET, "release", "agentbox")
# Set by install(): the binary as installed, which is what is measured.
BIN = BUILT


def install(path, work, name):
    """A copy of `path` made with `install`, as a package or `cargo install` would put it. The
    same bytes run from the file the linker wrote fault more pages in and start and exit slower
    (316 against 288 page faults, about 0.25 ms, for `--version` when measured), likely because
    the linker writes its output in small pieces and the page cache keeps it that way."""
    dest = os.path.join(work, name)
    run("install", "-m", "755", path, dest)
    return dest


def run(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def timed(args, env=None):
    t = time.perf_counter()
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def spawn_latency(n, env, tmux_sock, work, prev=None, gap=0.0):
    """Medians of n spawns of each, interleaved; `gap` seconds of quiet before each one (a spawn
    on its own rather than in a burst: the kernel's deferred work from the last one is done)."""
    ours, theirs, before = [], [], []
    prev_env = dict(env, AGENTBOX_HOME=env["AGENTBOX_HOME"] + "-prev")
    for i in range(n):
        # Interleaved so machine noise hits all alike.
        time.sleep(gap)
        ours.append(timed([BIN, "spawn", f"lat-{i}", "--", "sleep", "1000"], env))
        if prev:
            time.sleep(gap)
            before.append(timed([prev, "spawn", f"lat-{i}", "--", "sleep", "1000"], prev_env))
        log = os.path.join(work, f"tmux-{i}.log")
        time.sleep(gap)
        theirs.append(timed(["tmux", "-S", tmux_sock, "new-session", "-d", "-s", f"lat-{i}", "sleep 1000", ";",
                             "pipe-pane", "-t", f"lat-{i}", f"cat >> {log}"]))
    run(BIN, "killall", env=env, stdout=subprocess.DEVNULL)
    run(BIN, "clean", env=env, stdout=subprocess.DEVNULL)
    if prev:
        run(prev, "killall", env=prev_env, stdout=subprocess.DEVNULL)
        run(prev, "clean", env=prev_env, stdout=subprocess.DEVNULL)
    for i in range(n):
        subprocess.run(["tmux", "-S", tmux_sock, "kill-session", "-t", f"lat-{i}"], stderr=subprocess.DEVNULL)
    med = lambda xs: statistics.median(xs) * 1e3 if xs else None
    return med(ours), med(theirs), med(before)


def throughput(nbytes, env, tmux_sock, work, rounds):
    """Median MB/s of each over `rounds` interleaved rounds (single runs vary by 2x here)."""
    runs = [throughput_once(nbytes, env, tmux_sock, work) for _ in range(rounds)]
    med = lambda i: statistics.median(r[i] for r in runs)
    return (med(0), med(1), med(2), runs[-1][3], runs[-1][4], runs[-1][5])


def throughput_once(nbytes, env, tmux_sock, work):
    line = "a" * 99
    cmd = f"yes {line} | head -c {nbytes}"
    # agentbox: spawn, then wait for the agent to exit (its log then holds everything).
    t = time.perf_counter()
    run(BIN, "spawn", "tp", "--", "sh", "-c", cmd, env=env, stdout=subprocess.DEVNULL)
    run(BIN, "wait", "tp", env=env)
    ours = time.perf_counter() - t
    log = os.path.join(env["AGENTBOX_HOME"], "agents", "tp", "log")
    ours_bytes = os.path.getsize(log)
    run(BIN, "rm", "tp", env=env, stdout=subprocess.DEVNULL)
    # script: a raw PTY relayed into a file by a small C program.
    out = os.path.join(work, "script.log")
    t = time.perf_counter()
    run("script", "-q", "-e", "-c", cmd, out, stdout=subprocess.DEVNULL)
    raw = time.perf_counter() - t
    raw_bytes = os.path.getsize(out)
    # tmux with pipe-pane.
    out = os.path.join(work, "tmux-tp.log")
    t = time.perf_counter()
    if os.path.exists(out):
        os.remove(out)
    run("tmux", "-S", tmux_sock, "new-session", "-d", "-s", "tp", f"{cmd}; sleep 0.2", ";",
        "pipe-pane", "-t", "tp", f"cat >> {out}")
    while subprocess.run(["tmux", "-S", tmux_sock, "has-session", "-t", "tp"], stderr=subprocess.DEVNULL).returncode == 0:
        time.sleep(0.01)
    tmux = time.perf_counter() - t
    tmux_bytes = os.path.getsize(out) if os.path.exists(out) else 0
    return (ours_bytes / ours, raw_bytes / raw, tmux_bytes / tmux, ours_bytes, raw_bytes, tmux_bytes)


def pids_of_agents(home):
    """Supervisor pids and all their descendants."""
    children = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(p))
    sups = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if b"__supervise" in cmd and open(f"/proc/{p}/environ", "rb").read().find(home.encode()) >= 0:
                sups.append(int(p))
    out, stack = [], list(sups)
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return sups, out


def memory_kb(pids):
    pss = rss = 0
    for p in pids:
        try:
            for l in open(f"/proc/{p}/smaps_rollup"):
                if l.startswith("Pss:"):
                    pss += int(l.split()[1])
                elif l.startswith("Rss:"):
                    rss += int(l.split()[1])
        except OSError:
            pass
    return pss, rss


def density(n, env):
    t = time.perf_counter()
    run(BIN, "swarm", "idle", str(n), "--", "sleep", "infinity", env=env, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t
    sups, pids = pids_of_agents(env["AGENTBOX_HOME"])
    pss, rss = memory_kb(pids)
    run(BIN, "killall", env=env, stdout=subprocess.DEVNULL)
    run(BIN, "clean", env=env, stdout=subprocess.DEVNULL)
    return len(sups), len(pids), pss / max(len(sups), 1), rss / max(len(sups), 1), elapsed


def scaling(levels, env, tmux_sock):
    """Spawn latency (10 spawns, interleaved with tmux's) and memory per agent with N agents
    running, for each N in `levels` (idle `sleep infinity` agents fill up to N)."""
    rows, have = [], 0
    for n in levels:
        fill = n - 10 - have
        if fill > 0:
            run(BIN, "swarm", f"fill{n}", str(fill), "--", "sleep", "infinity", env=env, stdout=subprocess.DEVNULL)
            have += fill
        ours, theirs = [], []
        for i in range(10):
            ours.append(timed([BIN, "spawn", f"at{n}-{i}", "--", "sleep", "infinity"], env))
            theirs.append(timed(["tmux", "-S", tmux_sock, "new-session", "-d", "-s", f"at{n}-{i}", "sleep 100000"]))
        have += 10
        sups, pids = pids_of_agents(env["AGENTBOX_HOME"])
        pss, _ = memory_kb(pids)
        rows.append((len(sups), statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3, pss / max(len(sups), 1)))
    run(BIN, "killall", env=env, stdout=subprocess.DEVNULL)
    run(BIN, "clean", env=env, stdout=subprocess.DEVNULL)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spawns", type=int, default=30)
    ap.add_argument("--bytes", type=int, default=200_000_000)
    ap.add_argument("--density", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (median reported)")
    ap.add_argument("--prev", help="another agentbox binary whose spawn latency is measured in the same run")
    ap.add_argument("--spawn-only", action="store_true", help="only the spawn latency")
    ap.add_argument("--gap", type=float, default=0.0, help="seconds of quiet before each timed spawn (default 0)")
    ap.add_argument("--scale", help="only how cost grows: agents running, comma-separated (e.g. 10,100,1000)")
    a = ap.parse_args()
    run("cargo", "build", "--release", "-q", "-p", "agentbox", cwd=ROOT)
    work = tempfile.mkdtemp(prefix="agentbox-bench-")
    global BIN
    BIN = install(BUILT, work, "agentbox")
    if a.prev:
        a.prev = install(a.prev, work, "agentbox-prev")
    env = dict(os.environ, AGENTBOX_HOME=os.path.join(work, "home"))
    tmux_sock = os.path.join(work, "tmux.sock")
    run("tmux", "-S", tmux_sock, "new-session", "-d", "-s", "keepalive", "sleep 100000")
    try:
        if a.scale:
            levels = [int(x) for x in a.scale.split(",")]
            print("## how cost grows (10 spawns at each level, interleaved with tmux's; medians)\n")
            print("| agents running | `agentbox spawn` ms | `tmux new-session -d` ms | ratio | PSS per agent KiB |")
            print("|---|---|---|---|---|")
            for agents, ours, theirs, pss in scaling(levels, env, tmux_sock):
                print(f"| {agents} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f} | {pss:.0f} |")
            return
        ours, tmux, before = spawn_latency(a.spawns, env, tmux_sock, work, a.prev, a.gap)
        spaced = f", {a.gap * 1e3:.0f} ms apart" if a.gap else ""
        print(f"## spawn latency ({a.spawns} spawns{spaced}, median)\n")
        print("| | ms |\n|---|---|")
        print(f"| `agentbox spawn X -- sleep 1000` | {ours:.1f} |")
        print(f"| `tmux new-session -d` + `pipe-pane` | {tmux:.1f} |")
        if before:
            print(f"| previous agentbox | {before:.1f} |")
        print(f"\nratio agentbox/tmux: {ours / tmux:.2f} (goal <= 0.8)\n")
        if before:
            print(f"ratio agentbox/previous: {ours / before:.3f}\n")
        if a.spawn_only:
            return

        o, r, t, ob, rb, tb = throughput(a.bytes, env, tmux_sock, work, a.rounds)
        print(f"## output throughput ({a.bytes / 1e6:.0f} MB written through a PTY into a file, median of {a.rounds} rounds)\n")
        print("| | MB/s | bytes in file |\n|---|---|---|")
        print(f"| agentbox agent -> log | {o / 1e6:.0f} | {ob} |")
        print(f"| raw PTY (`script`) | {r / 1e6:.0f} | {rb} |")
        print(f"| tmux + pipe-pane | {t / 1e6:.0f} | {tb} |")
        print(f"\nratio agentbox/raw PTY: {o / r:.2f} (goal >= 0.8); tmux/raw PTY: {t / r:.2f}\n")

        if a.density:
            agents, procs, pss, rss, el = density(a.density, env)
            print(f"## density ({agents} idle agents, {procs} processes)\n")
            print("| per agent | KiB |\n|---|---|")
            print(f"| PSS (shared pages split between sharers) | {pss:.0f} |")
            print(f"| RSS (shared pages counted in full) | {rss:.0f} |")
            print(f"\nspawned {agents} agents in {el:.1f} s ({el / max(agents, 1) * 1e3:.1f} ms each); goal <= 2 MiB per agent\n")
    finally:
        subprocess.run(["tmux", "-S", tmux_sock, "kill-server"], stderr=subprocess.DEVNULL)
        subprocess.run([BIN, "killall"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
