#!/usr/bin/env python3
"""Workspace benchmarks, each a ratio against a reference measured in the same run.

1. cp out: `agentbox cp NAME:tree DIR` of a tree of FILES files (4 KiB each, 100 to a directory)
   from a running agent, vs `cp -a` of the same tree from the agent's workspace on the host.
2. cp in: `agentbox cp DIR NAME:/tmp/in-N` vs `cp -a DIR` to a host directory.
3. pause and resume of an agent running a busy shell and a CPU burner: `agentbox pause` and
   `agentbox resume` vs `kill -STOP PID` and `kill -CONT PID` of its command (one process, each
   one process start, as the CLI's is).

Usage: bench/workspaces.py [--files 1000] [--rounds 10]
Needs: a release build (the script builds it).
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_BUILD_TARGET", "x86_64-unknown-linux-gnu")
BIN = os.path.join(ROOT, "target", TARGET, "release", "agentbox")


def timed(args, env=None):
    t = time.perf_counter()
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def med_ms(xs):
    return statistics.median(xs) * 1e3


def make_tree(root, files):
    os.makedirs(root)
    block = os.urandom(4096)
    for i in range(files):
        d = os.path.join(root, f"d{i // 100:03d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
            f.write(block)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "agentbox"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="abx-bench-ws-")
    env = dict(os.environ, AGENTBOX_HOME=os.path.join(work, "home"))
    try:
        src = os.path.join(work, "src")
        make_tree(os.path.join(src, "tree"), a.files)
        subprocess.run([BIN, "spawn", "w", "--from-dir", src, "--", "sh", "-c",
                        "(while :; do :; done) & while :; do echo tick; sleep 0.05; done"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        ws = os.path.join(env["AGENTBOX_HOME"], "agents", "w", "workspace")
        ours_out, ref_out, ours_in, ref_in = [], [], [], []
        for i in range(a.rounds):
            ours_out.append(timed([BIN, "cp", "w:tree", os.path.join(work, f"o{i}")], env))
            ref_out.append(timed(["cp", "-a", os.path.join(ws, "tree"), os.path.join(work, f"r{i}")]))
            ours_in.append(timed([BIN, "cp", os.path.join(src, "tree"), f"w:/tmp/in-{i}"], env))
            ref_in.append(timed(["cp", "-a", os.path.join(src, "tree"), os.path.join(work, f"ri{i}")]))
        pid = subprocess.run([BIN, "info", "w", "--json"], env=env, check=True, capture_output=True, text=True)
        import json
        sandbox = json.loads(pid.stdout)["agent"]["sandbox_pid"]
        pause, resume, stop, cont = [], [], [], []
        for _ in range(a.rounds):
            pause.append(timed([BIN, "pause", "w"], env))
            resume.append(timed([BIN, "resume", "w"], env))
            stop.append(timed(["kill", "-STOP", str(sandbox)]))
            cont.append(timed(["kill", "-CONT", str(sandbox)]))
        procs = len(json.loads(subprocess.run([BIN, "top", "w", "--json"], env=env, check=True,
                                              capture_output=True, text=True).stdout))
        print(f"tree: {a.files} files of 4 KiB; {a.rounds} rounds, medians")
        print("| operation | agentbox ms | reference ms | ratio |")
        print("|---|---|---|---|")
        rows = [
            (f"cp out (`agentbox cp w:tree DIR` vs `cp -a WS/tree DIR`)", ours_out, ref_out),
            (f"cp in (`agentbox cp DIR w:/tmp/in` vs `cp -a DIR DIR2`)", ours_in, ref_in),
            (f"pause ({procs} processes) vs `kill -STOP PID`", pause, stop),
            (f"resume vs `kill -CONT PID`", resume, cont),
        ]
        for name, ours, ref in rows:
            print(f"| {name} | {med_ms(ours):.1f} | {med_ms(ref):.1f} | {med_ms(ours) / med_ms(ref):.2f} |")
    finally:
        subprocess.run([BIN, "killall", "--force"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run([BIN, "clean"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
