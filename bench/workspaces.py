#!/usr/bin/env python3
"""Workspace benchmarks, each a ratio against a reference measured in the same run.

1. cp out: `agentbox cp NAME:tree DIR` of a tree of FILES files (4 KiB each, 100 to a directory)
   from a running agent, vs `cp -a` of the same tree from the agent's workspace on the host.
2. cp in: `agentbox cp DIR NAME:/tmp/in-N` vs `cp -a DIR` to a host directory.
3. pause and resume of an agent running a busy shell and a CPU burner: `agentbox pause` and
   `agentbox resume` vs `kill -STOP PID` and `kill -CONT PID` of its command (one process, each
   one process start, as the CLI's is).
4. workspace creation for trees of 1k, 10k and 100k files: `agentbox spawn X --from-dir TREE --
   true` (an overlay) vs `agentbox spawn X -- true` (an empty workspace: the same spawn without
   the tree), `cp -a TREE` and `git worktree add` (10k and below: committing 100k files takes
   minutes).
5. with 100 files changed in a running agent on the 10k tree: `checkpoint` (vs `cp -a` of those
   100 files), `fork` (vs a plain `spawn` of the same command), and `apply --to DIR` of them
   (vs `cp` of the same 100 files).

Usage: bench/workspaces.py [--files 1000] [--rounds 10] [--sizes 1000,10000,100000]
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


def overlayable(tree):
    """Gives the tree to the sandbox's host id, so that it can be overlaid (as root, agents run
    as uid 2100000000, which owns nothing of root's)."""
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "2100000000:2100000000", tree], check=True)


def creation(env, work, sizes, rounds):
    rows = []
    for n in sizes:
        tree = os.path.join(work, f"t{n}")
        make_tree(tree, n)
        overlayable(tree)
        repo = None
        if n <= 10000:
            repo = os.path.join(work, f"g{n}")
            shutil.copytree(tree, repo, symlinks=True)
            q = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=repo)
            subprocess.run(["git", "init", "-q"], **q)
            subprocess.run(["git", "add", "."], **q)
            subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "t"], **q)
        ov, empty, cp, wt = [], [], [], []
        for i in range(rounds):
            ov.append(timed([BIN, "spawn", f"o{n}-{i}", "--from-dir", tree, "--", "true"], env))
            empty.append(timed([BIN, "spawn", f"e{n}-{i}", "--", "true"], env))
            cp.append(timed(["cp", "-a", tree, os.path.join(work, f"c{n}-{i}")]))
            if repo:
                wt.append(timed(["git", "-C", repo, "worktree", "add", "-q", "--detach",
                                 os.path.join(work, f"w{n}-{i}")]))
        layer = os.path.join(env["AGENTBOX_HOME"], "agents", f"o{n}-0", "layers", "upper")
        assert os.path.isdir(layer), "the workspace was not an overlay"
        rows.append((n, ov, empty, cp, wt))
        subprocess.run([BIN, "rm", "-f"] + [f"{p}{n}-{i}" for p in "oe" for i in range(rounds)],
                       env=env, stdout=subprocess.DEVNULL, check=True)
    print("| files | spawn --from-dir (overlay) ms | spawn, empty workspace ms | cp -a ms | git worktree add ms | overlay vs cp -a |")
    print("|---|---|---|---|---|---|")
    for n, ov, empty, cp, wt in rows:
        w = f"{med_ms(wt):.1f}" if wt else "-"
        print(f"| {n} | {med_ms(ov):.1f} | {med_ms(empty):.1f} | {med_ms(cp):.1f} | {w} | {med_ms(ov) / med_ms(cp):.3f} |")


def changes(env, work, rounds):
    tree = os.path.join(work, "t10k")
    make_tree(tree, 10000)
    overlayable(tree)
    cmd = ["--", "sh", "-c", "while :; do sleep 1; done"]
    subprocess.run([BIN, "spawn", "c", "--from-dir", tree] + cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    script = "for i in $(seq 1 100); do head -c 4096 /dev/urandom > d000/f$(printf %05d $((i-1))); done"
    ck, ckref, fork, spawn, apply, applyref = [], [], [], [], [], []
    for i in range(rounds):
        subprocess.run([BIN, "exec", "c", "sh", "-c", script], env=env, check=True)
        ck.append(timed([BIN, "checkpoint", "c"], env))
        ckref.append(timed(["cp", "-a", os.path.join(tree, "d000"), os.path.join(work, f"ck{i}")]))
        fork.append(timed([BIN, "fork", "c", f"f{i}"], env))
        spawn.append(timed([BIN, "spawn", f"s{i}", "--from-dir", tree] + cmd, env))
        to = os.path.join(work, f"to{i}")
        shutil.copytree(tree, to, symlinks=True)
        apply.append(timed([BIN, "apply", "c", "--to", to, "--force"], env))
        changed = os.path.join(env["AGENTBOX_HOME"], "agents", "c", "layers", "upper", "d000")
        dst = os.path.join(work, f"ap{i}")
        os.makedirs(dst)
        files = [os.path.join(changed, f) for f in sorted(os.listdir(changed))]
        applyref.append(timed(["cp"] + files + [dst]))
    print("| operation (100 changed files of 4 KiB in a 10,000-file tree) | agentbox ms | reference ms | ratio |")
    print("|---|---|---|---|")
    for name, ours, ref in [
        ("`checkpoint c` (running agent) vs `cp -a` of the 100 files' directory", ck, ckref),
        ("`fork c NEW` (running, starts) vs `spawn NEW --from-dir TREE` of the same command", fork, spawn),
        ("`apply c --to DIR` vs `cp` of the 100 files", apply, applyref),
    ]:
        print(f"| {name} | {med_ms(ours):.1f} | {med_ms(ref):.1f} | {med_ms(ours) / med_ms(ref):.2f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--sizes", default="1000,10000,100000")
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
        ours_out, ref_out, ours_in, ref_in = [], [], [], []
        for i in range(a.rounds):
            ours_out.append(timed([BIN, "cp", "w:tree", os.path.join(work, f"o{i}")], env))
            ref_out.append(timed(["cp", "-a", os.path.join(src, "tree"), os.path.join(work, f"r{i}")]))
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
            (f"cp out (`agentbox cp w:tree DIR` vs `cp -a SRC/tree DIR`)", ours_out, ref_out),
            (f"cp in (`agentbox cp DIR w:/tmp/in` vs `cp -a DIR DIR2`)", ours_in, ref_in),
            (f"pause ({procs} processes) vs `kill -STOP PID`", pause, stop),
            (f"resume vs `kill -CONT PID`", resume, cont),
        ]
        for name, ours, ref in rows:
            print(f"| {name} | {med_ms(ours):.1f} | {med_ms(ref):.1f} | {med_ms(ours) / med_ms(ref):.2f} |")
        subprocess.run([BIN, "rm", "-f", "w"], env=env, stdout=subprocess.DEVNULL, check=True)
        print()
        creation(env, work, [int(x) for x in a.sizes.split(",")], a.rounds)
        print()
        changes(env, work, a.rounds)
    finally:
        subprocess.run([BIN, "killall", "--force"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run([BIN, "clean"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
