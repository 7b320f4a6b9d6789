#!/usr/bin/env bash
# Sandbox start-up cost: `/bin/true` bare, under bubblewrap, and under `agentbox run`, measured in
# the same run with hyperfine, in interleaved rounds so that machine noise hits all three alike.
# Prints a Markdown table with medians and the agentbox/bwrap ratio (goal: <= 1.0).
#
# Usage: bench/startup.sh [ROUNDS] [RUNS_PER_ROUND] [PREVIOUS_AGENTBOX]
#   (defaults: 5 rounds of 200 runs; with PREVIOUS_AGENTBOX, another build of agentbox is measured
#   in the same rounds, for the cost of a change)
# Needs: hyperfine, bubblewrap, python3 (apt-get install hyperfine bubblewrap python3).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
runs=${2:-200}
prev=${3:-}
cargo build --release -q -p agentbox
target=${CARGO_BUILD_TARGET:-x86_64-unknown-linux-gnu}
out=$(mktemp -d)
ws=$(mktemp -d)
trap 'rm -rf "$out" "$ws"' EXIT
# Measured as installed (`install`, as bwrap was by its package): the same bytes run from the
# file the linker wrote fault more pages in and start and exit slower (316 against 288 page
# faults, and about 0.25 ms, for `agentbox --version` when measured), likely because the linker
# writes its output in small pieces and the page cache keeps it that way.
install -m 755 "target/$target/release/agentbox" "$out/agentbox"
bin=$out/agentbox
if [ -n "$prev" ]; then
  install -m 755 "$prev" "$out/agentbox-prev"
  prev=$out/agentbox-prev
fi
# As root the sandbox runs as agentbox's unprivileged uid, which must be able to enter it.
chmod 755 "$ws"
cd "$ws"
# The same workspace for both: agentbox binds the current directory read-write, so bwrap does too.
bwrap_cmd="bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --bind $ws $ws --chdir $ws --unshare-all --die-with-parent true"
for r in $(seq "$rounds"); do
  cmds=("true" "$bwrap_cmd" "$bin run -- true")
  if [ -n "$prev" ]; then cmds+=("$prev run -- true"); fi
  hyperfine -N --style none --warmup 20 --runs "$runs" --export-json "$out/round-$r.json" "${cmds[@]}" >/dev/null
done
python3 - "$out" "$rounds" "$runs" <<'PY'
import json, statistics, sys, glob
out, rounds, runs = sys.argv[1], sys.argv[2], sys.argv[3]
times = {}
for f in sorted(glob.glob(f"{out}/round-*.json")):
    for r in json.load(open(f))["results"]:
        times.setdefault(r["command"], []).extend(r["times"])
names = list(times)
med = {n: statistics.median(t) * 1e3 for n, t in times.items()}
p90 = {n: statistics.quantiles(t, n=10)[8] * 1e3 for n, t in times.items()}
true_, bwrap, agentbox = names[:3]
prev = names[3] if len(names) > 3 else None
print(f"rounds={rounds} runs/round={runs} samples/command={len(times[true_])}\n")
print("| command | median ms | p90 ms |")
print("|---|---|---|")
for n in names:
    label = "agentbox run -- true" if n == agentbox else ("previous agentbox run -- true" if n == prev else n)
    print(f"| `{label}` | {med[n]:.2f} | {p90[n]:.2f} |")
print()
print(f"ratio agentbox/bwrap (median): {med[agentbox] / med[bwrap]:.2f}")
if prev:
    print(f"ratio agentbox/previous (median): {med[agentbox] / med[prev]:.3f}")
print(f"sandbox overhead over bare true: agentbox {med[agentbox] - med[true_]:.2f} ms, bwrap {med[bwrap] - med[true_]:.2f} ms")
PY
