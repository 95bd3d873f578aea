#!/bin/bash
# Rows of the matrix run again after the fixes it led to (seed no longer a fallback parent,
# 256 KiB upload chunks), into bench/results/after-matrix.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
B=target/release/odonata-bench
O=bench/results/after-matrix.jsonl
$B run --out $O --systems odonata --sizes 256Mi --peers 8,16
$B run --out $O --systems odonata --sizes 256Mi --peers 8,16 --origin-rate 1000
$B run --out $O --systems odonata,bittorrent --sizes 1Gi --peers 4
$B run --out $O --systems odonata --sizes 1Gi --peers 16
# target/release/odonata-bench run --out bench/results/after-matrix.jsonl --systems odonata --sizes 256Mi --peers 8 --origin-rate 1000   # with TCP retransmits sampled
# target/release/odonata-bench run --out bench/results/after-matrix.jsonl --systems odonata --sizes 256Mi --peers 16                    # idem
