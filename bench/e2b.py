#!/usr/bin/env python3
"""E2B's Python SDK against `agentbox serve`, against the CLI doing the same in the same run.

One round: `Sandbox.create()` + `commands.run("true")` + `kill()` through the SDK (unchanged,
E2B_API_URL and E2B_SANDBOX_URL at a local `agentbox serve`), vs `agentbox spawn X -- sleep
infinity` + `agentbox exec X true` + `agentbox rm -f X`. Also the SDK's create-to-first-command
time (create + run("true")) alone, the figure to compare with E2B's published create latency.

Usage: bench/e2b.py [--rounds 10]
Needs: a release build (the script builds it) and tests/python/.venv with `e2b`
(`python3 -m venv tests/python/.venv && tests/python/.venv/bin/pip install -r tests/python/requirements.txt`).
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_BUILD_TARGET", "x86_64-unknown-linux-gnu")
BIN = os.path.join(ROOT, "target", TARGET, "release", "agentbox")
PY = os.path.join(ROOT, "tests", "python", ".venv", "bin", "python")

CLIENT = r'''
import sys, time
from e2b import Sandbox
rounds = int(sys.argv[1])
Sandbox.create().kill()  # warm: imports, connections
for _ in range(rounds):
    t0 = time.perf_counter()
    s = Sandbox.create()
    s.commands.run("true")
    t1 = time.perf_counter()
    s.kill()
    t2 = time.perf_counter()
    print(f"{(t1 - t0) * 1e3:.2f} {(t2 - t0) * 1e3:.2f}", flush=True)
'''


def timed(args, env):
    t = time.perf_counter()
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "agentbox"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="abx-bench-e2b-")
    env = dict(os.environ, AGENTBOX_HOME=os.path.join(work, "home"))
    server = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = server.stdout.readline().strip()
        token = open(os.path.join(env["AGENTBOX_HOME"], "api-token")).read().strip()
        sdk_env = dict(env, E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY=token)
        cli = []
        for i in range(a.rounds):
            t = time.perf_counter()
            for args in (["spawn", f"c{i}", "--", "sleep", "infinity"], ["exec", f"c{i}", "true"], ["rm", "-f", f"c{i}"]):
                subprocess.run([BIN] + args, check=True, env=env, stdout=subprocess.DEVNULL)
            cli.append(time.perf_counter() - t)
        out = subprocess.run([PY, "-c", CLIENT, str(a.rounds)], env=sdk_env, check=True,
                             capture_output=True, text=True).stdout.split("\n")
        first = [float(l.split()[0]) for l in out if l.strip()]
        whole = [float(l.split()[1]) for l in out if l.strip()]
        med = statistics.median
        print(f"{a.rounds} rounds, medians")
        print("| operation | ms | reference ms | ratio |")
        print("|---|---|---|---|")
        print(f"| SDK `Sandbox.create()` + `commands.run(\"true\")` + `kill()` vs CLI `spawn` + `exec true` + `rm -f` | "
              f"{med(whole):.1f} | {med(cli) * 1e3:.1f} | {med(whole) / (med(cli) * 1e3):.2f} |")
        print(f"| SDK create to first command done (`create()` + `run(\"true\")`) vs E2B's published create latency (200 ms) | "
              f"{med(first):.1f} | 200 | {med(first) / 200:.2f} |")
    finally:
        server.terminate()
        server.wait()
        subprocess.run([BIN, "killall", "--force"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
