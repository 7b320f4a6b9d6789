#!/usr/bin/env python3
"""The VM backend: time from `spawn` to the agent's first output, and memory per idle agent.

Measured in the same run, interleaved, against the namespace backend as the reference:
  - first output: `agentbox spawn NAME [--backend vm] -- sh -c 'echo first-output; sleep 600'`,
    then `agentbox logs NAME` polled every 10 ms until the line appears;
  - memory: PSS (shared pages split between sharers) of the supervisor and every process of its
    sandbox (for a VM: the host side, QEMU and its helpers), measured once the agent is idle.
The guest image comes from `agentbox vm setup` (run first if missing). The accelerator is the
one this machine gets (`agentbox vm status`); it is printed with the results.

Usage: bench/vm.py [--rounds N] [--memory SIZE]      Prints a Markdown table.
"""
import argparse, json, os, statistics, subprocess, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--memory", default="512M")
args = ap.parse_args()
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
subprocess.run(["cargo", "build", "--release", "-q", "-p", "agentbox"], cwd=root, check=True)
target = os.environ.get("CARGO_BUILD_TARGET", "x86_64-unknown-linux-gnu")
BIN = os.path.join(root, "target", target, "release", "agentbox")
tmp = tempfile.mkdtemp(prefix="abx-bench-")
env = dict(os.environ, AGENTBOX_HOME=os.path.join(tmp, "home"))
os.makedirs(env["AGENTBOX_HOME"])


def ab(*a, check=True):
    return subprocess.run([BIN, *a], env=env, check=check, capture_output=True, text=True)


if ab("vm", "status", check=False).returncode != 0:
    ab("vm", "setup")
status = json.loads(ab("vm", "status", "--json").stdout)


def tree(pid):
    children = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(p))
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return out


def pss_kb(pids):
    total = 0
    for p in pids:
        try:
            for l in open(f"/proc/{p}/smaps_rollup"):
                if l.startswith("Pss:"):
                    total += int(l.split()[1])
        except OSError:
            pass
    return total


def one(name, flags):
    t = time.perf_counter()
    ab("spawn", name, *flags, "--", "sh", "-c", "echo first-output; exec sleep 600")
    while "first-output" not in ab("logs", name).stdout:
        if time.perf_counter() - t > 300:
            raise SystemExit(f"{name}: no output after 300 s")
        time.sleep(0.01)
    first = time.perf_counter() - t
    time.sleep(2)  # idle
    info = json.loads(ab("info", name, "--json").stdout)["agent"]
    mem = pss_kb(tree(info["supervisor_pid"]))
    ab("kill", name)
    ab("rm", name, check=False)
    return first, mem


ns_t, vm_t, ns_m, vm_m = [], [], [], []
for i in range(args.rounds):
    a, m = one(f"ns{i}", [])
    ns_t.append(a)
    ns_m.append(m)
    a, m = one(f"vm{i}", ["--backend", "vm", "--memory", args.memory])
    vm_t.append(a)
    vm_m.append(m)

med = statistics.median
print(f"accelerator: {status['accel']}" + (f" ({status['reason']})" if status.get("reason") else ""))
print(f"guest: {status['kernel']}, {args.memory} of memory, 1 vCPU; rounds: {args.rounds}\n")
print("| measure | ns backend (reference) | vm backend | ratio |")
print("|---|---|---|---|")
print(f"| spawn to first output, median | {med(ns_t)*1000:.0f} ms | {med(vm_t)*1000:.0f} ms | {med(vm_t)/med(ns_t):.1f} |")
print(f"| memory per idle agent (PSS), median | {med(ns_m)/1024:.1f} MiB | {med(vm_m)/1024:.1f} MiB | {med(vm_m)/max(med(ns_m),1):.1f} |")
