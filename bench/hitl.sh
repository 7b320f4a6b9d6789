#!/usr/bin/env bash
# The HITL detector against the recorded corpus (crates/agentbox-supervisor/tests/hitl): how many
# recorded prompts it detects, and how many requests it would open in ordinary sessions (shell,
# builds, test runs, git, system tools) replayed with their real timing.
# Usage: bench/hitl.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -q -p agentbox-supervisor --test hitl_corpus -- --nocapture 2>&1 | grep -o 'HITL.*'
