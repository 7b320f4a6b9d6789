#!/usr/bin/env python3
"""The VM backend: time from `spawn` to the agent's first output, and memory per idle agent.

Measured in the same run, interleaved, against the namespace backend as the reference, and
against a VM that boots instead of starting from its snapshot (AGENTBOX_VM_SNAPSHOT=off):
  - first output: `agentbox spawn NAME [--backend vm] -- sh -c 'echo first-output; sleep 600'`,
    then `agentbox logs NAME` polled every 10 ms until the line appears;
  - memory: PSS (shared pages split between sharers) of the supervisor and every process of its
    sandbox (for a VM: the host side, QEMU and its helpers), measured once the agent is idle.
Then the scaling table: VM agents spawned one after another and kept running; at 1, 4 and 16
(--scale) the last one's spawn to first output and the mean PSS per agent.
The guest image and its snapshots come from `agentbox vm setup` (run first if missing). The
accelerator is the one this machine gets (`agentbox vm status`); it is printed with the results.

Usage: bench/vm.py [--rounds N] [--memory SIZE] [--scale 1,4,16]     Prints Markdown tables.
"""
import argparse, json, os, statistics, subprocess, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--memory", default="512M")
ap.add_argument("--scale", default="1,4,16")
args = ap.parse_args()
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
subprocess.run(["cargo", "build", "--release", "-q", "-p", "agentbox"], cwd=root, check=True)
target = os.environ.get("CARGO_BUILD_TARGET", "x86_64-unknown-linux-gnu")
BIN = os.path.join(root, "target", target, "release", "agentbox")
tmp = tempfile.mkdtemp(prefix="abx-bench-")
env = dict(os.environ, AGENTBOX_HOME=os.path.join(tmp, "home"))
os.makedirs(env["AGENTBOX_HOME"])


def ab(*a, check=True, extra=None):
    return subprocess.run([BIN, *a], env=dict(env, **(extra or {})), check=check, capture_output=True, text=True)


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


def start(name, flags, extra=None):
    """Spawns NAME; seconds until its first output shows."""
    t = time.perf_counter()
    ab("spawn", name, *flags, "--", "sh", "-c", "echo first-output; exec sleep 600", extra=extra)
    while "first-output" not in ab("logs", name).stdout:
        if time.perf_counter() - t > 300:
            raise SystemExit(f"{name}: no output after 300 s")
        time.sleep(0.01)
    return time.perf_counter() - t


def memory(name):
    info = json.loads(ab("info", name, "--json").stdout)["agent"]
    return pss_kb(tree(info["supervisor_pid"]))


def one(name, flags, extra=None):
    first = start(name, flags, extra)
    time.sleep(5)  # idle: the balloon has reported what the guest freed
    mem = memory(name)
    ab("kill", name)
    ab("rm", name, check=False)
    return first, mem


VM = ["--backend", "vm", "--memory", args.memory]
# The snapshot of this machine layout, made before anything is timed.
one("warm", VM)
ns_t, vm_t, cold_t, ns_m, vm_m, cold_m = [], [], [], [], [], []
for i in range(args.rounds):
    for (t, m, name, flags, extra) in [
        (ns_t, ns_m, f"ns{i}", [], None),
        (vm_t, vm_m, f"vm{i}", VM, None),
        (cold_t, cold_m, f"cold{i}", VM, {"AGENTBOX_VM_SNAPSHOT": "off"}),
    ]:
        a, b = one(name, flags, extra)
        t.append(a)
        m.append(b)

med = statistics.median
print(f"accelerator: {status['accel']}" + (f" ({status['reason']})" if status.get("reason") else ""))
print(f"guest: {status['kernel']}, {args.memory} of memory, 1 vCPU; rounds: {args.rounds}\n")
print("| measure | ns backend (reference) | vm, from its snapshot | vm, booted | snapshot / ns | snapshot / booted |")
print("|---|---|---|---|---|---|")
print(f"| spawn to first output, median | {med(ns_t)*1000:.0f} ms | {med(vm_t)*1000:.0f} ms | {med(cold_t)*1000:.0f} ms "
      f"| {med(vm_t)/med(ns_t):.1f} | {med(vm_t)/med(cold_t):.2f} |")
print(f"| memory per idle agent (PSS), median | {med(ns_m)/1024:.1f} MiB | {med(vm_m)/1024:.1f} MiB | {med(cold_m)/1024:.1f} MiB "
      f"| {med(vm_m)/max(med(ns_m),1):.1f} | {med(vm_m)/max(med(cold_m),1):.2f} |")

# How cost grows with the number of VM agents running.
print("\n| VM agents running | spawn to first output (the last) | PSS per agent (mean) |")
print("|---|---|---|")
running = []
for n in sorted(int(x) for x in args.scale.split(",")):
    last = None
    while len(running) < n:
        name = f"s{len(running)}"
        last = start(name, VM)
        running.append(name)
    time.sleep(5)
    mean = statistics.mean(memory(x) for x in running)
    print(f"| {n} | {last*1000:.0f} ms | {mean/1024:.1f} MiB |")
for name in running:
    ab("kill", name, check=False)
    ab("rm", name, check=False)
