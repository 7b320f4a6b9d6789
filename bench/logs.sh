#!/usr/bin/env bash
# `agentbox logs NAME -n 10`, `-n 50` (rendered through the terminal model) and `screen` on an
# agent whose log is 2 GiB, beside `tail -n 10` of the same file, measured in the same run with
# hyperfine. The log is 2 GiB of real lines (written once,
# then reused: BENCH_LOG_DIR keeps it between runs), so both read only what they need of it.
# Usage: bench/logs.sh [RUNS]   Needs: hyperfine (apt-get install hyperfine).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
cargo build --release -q -p agentbox
target=${CARGO_BUILD_TARGET:-x86_64-unknown-linux-gnu}
bin=$(pwd)/target/$target/release/agentbox
home=$(mktemp -d)
trap 'AGENTBOX_HOME=$home "$bin" killall --force >/dev/null 2>&1 || true; rm -rf "$home"' EXIT
export AGENTBOX_HOME=$home
"$bin" spawn huge -- true >/dev/null
"$bin" wait huge >/dev/null || true
log=$home/agents/huge/log
# 2 GiB of 100-byte lines, made by doubling a block (seconds, not minutes).
python3 - "$log" <<'PY'
import sys
line = b"x" * 92
block = b"".join(b"%07d " % i + line + b"\n" for i in range(10000))  # ~1 MB
with open(sys.argv[1], "wb") as f:
    for _ in range((2 << 30) // len(block)):
        f.write(block)
PY
ls -l "$log" | awk '{printf "log: %.2f GiB\n", $5 / 2^30}'
out=$(mktemp)
hyperfine -N -w 3 -r "$runs" --export-json "$out" \
  "$bin logs huge -n 10" \
  "$bin logs huge -n 50" \
  "$bin screen huge" \
  "tail -n 10 $log" >/dev/null
python3 - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
med = {x["command"].rsplit("/", 1)[-1]: x["median"] * 1000 for x in r}
print("| command | median ms |")
print("|---|---|")
for x in r:
    print(f"| `{x['command'].split('/')[-1] if x['command'].startswith('/') else x['command']}` | {x['median'] * 1000:.2f} |")
t = [x["median"] for x in r if x["command"].startswith("tail")][0]
for x in r:
    if not x["command"].startswith("tail"):
        name = x["command"].rsplit("/", 1)[-1]
        print(f"ratio {name} / tail -n 10 (median): {x['median'] / t:.2f}")
PY
rm -f "$out"
