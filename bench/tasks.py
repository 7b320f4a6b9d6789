#!/usr/bin/env python3
"""Task overhead: what the queue, the staging, the runner and artifact collection add to an agent.

Measured in the same run, interleaved so machine noise hits both alike:
  - reference: `agentbox spawn NAME -- true` then `agentbox wait NAME` (an agent and its end);
  - task:      `agentbox task submit --wait` of a manifest running `true` that clones a local
               repository and collects one artifact.
Also the HITL detector: the time from a question printed to the request being open (it waits for
the output to settle, 400 ms by default), against the same agent printing a line that is no
question (reference: the time to see that line on `agentbox screen`).

Usage: bench/tasks.py [--rounds N]      Prints a Markdown table.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=10)
args = ap.parse_args()
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
subprocess.run(["cargo", "build", "--release", "-q", "-p", "agentbox"], cwd=root, check=True)
target = os.environ.get("CARGO_BUILD_TARGET", "x86_64-unknown-linux-gnu")
BIN = os.path.join(root, "target", target, "release", "agentbox")
tmp = tempfile.mkdtemp(prefix="abx-bench-")
env = dict(os.environ, AGENTBOX_HOME=os.path.join(tmp, "home"))
os.makedirs(env["AGENTBOX_HOME"])
with open(os.path.join(env["AGENTBOX_HOME"], "config.toml"), "w") as f:
    f.write("[tasks]\nmax_concurrent = 4\n")

def ab(*a, check=True):
    return subprocess.run([BIN, *a], env=env, check=check, capture_output=True, text=True)

repo = os.path.join(tmp, "repo")
os.makedirs(repo)
git = ["git", "-c", "user.email=b@b", "-c", "user.name=b"]
subprocess.run(git + ["init", "-q"], cwd=repo, check=True)
open(os.path.join(repo, "f"), "w").write("x\n")
subprocess.run(git + ["add", "f"], cwd=repo, check=True)
subprocess.run(git + ["commit", "-qm", "x"], cwd=repo, check=True)
manifest = os.path.join(tmp, "t.yaml")
open(manifest, "w").write(
    f"version: '1'\nrepository: {{url: {repo}}}\nagent: {{command: [sh, -c, 'cp f out.txt']}}\n"
    "artifacts: {paths: [out.txt]}\n")

spawn, task, ask, plain = [], [], [], []
for r in range(args.rounds):
    t0 = time.perf_counter()
    ab("spawn", f"ref-{r}", "--", "true")
    ab("wait", f"ref-{r}", check=False)
    spawn.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ab("task", "submit", "-f", manifest, "--wait")
    task.append(time.perf_counter() - t0)
    # HITL: a question, and the time until the request is open.
    ab("spawn", f"ask-{r}", "--", "sh", "-c", "sleep 0.2; printf 'Go on? [y/N] '; read a; sleep 600")
    t0 = time.perf_counter()
    while not json.loads(ab("hitl", "list", "--json").stdout):
        time.sleep(0.01)
    ask.append(time.perf_counter() - t0)
    ab("kill", f"ask-{r}")
    ab("spawn", f"say-{r}", "--", "sh", "-c", "sleep 0.2; echo plain-line; sleep 600")
    t0 = time.perf_counter()
    while "plain-line" not in ab("screen", f"say-{r}").stdout:
        time.sleep(0.01)
    plain.append(time.perf_counter() - t0)
    ab("kill", f"say-{r}")
ab("killall", check=False)

def ms(v):
    return statistics.median(v) * 1000

print(f"| measure ({args.rounds} rounds, medians) | agentbox | reference | ratio |")
print("|---|---|---|---|")
print(f"| task submit --wait (clone, agent, artifact) vs spawn + wait | {ms(task):.0f} ms | {ms(spawn):.0f} ms | {ms(task)/ms(spawn):.2f} |")
print(f"| question on screen -> HITL request open vs line on screen | {ms(ask):.0f} ms | {ms(plain):.0f} ms | {ms(ask)/ms(plain):.2f} |")
