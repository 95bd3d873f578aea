#!/bin/bash
# The standing matrix of docs/benchmarks.md, in the order the rows matter most, with
# release binaries (build them first: cargo build --release --workspace --bins).
# Appends to bench/results/results.jsonl; run `odonata-bench report` afterwards.
# Direct HTTP runs N = 1 only at 1 GiB and stops at N = 16 at 256 MiB: its time is
# N x F / u_s (every copy crosses the origin's uplink), so larger N would only spend an hour
# confirming it. N = 32 runs at 256 MiB only: on 2 cores it is CPU-bound for every system
# (load average 44), and 1 GiB would take 6 minutes a system for the same answer.
set -euo pipefail
cd "$(dirname "$0")/.."
B=target/release/odonata-bench
$B run --systems odonata,bittorrent,direct --sizes 256Mi --peers 1,4,8,16
$B run --systems odonata,bittorrent,direct --sizes 256Mi --peers 8,16 --origin-rate 1000
$B run --systems odonata,bittorrent --sizes 256Mi --peers 32
$B run --systems odonata,bittorrent,direct --sizes 256Mi --peers 8 --delay-ms 20
$B run --systems odonata,bittorrent --sizes 1Gi --peers 1,4,8,16
$B run --systems direct --sizes 1Gi --peers 1
