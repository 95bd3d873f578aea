#!/bin/bash
# Samples every host's link counters of a running odonata-bench testbed (the bridge-side
# veth ends: tx = the host's download, rx = its upload) every 0.5 s, for at most 240
# samples, into OUT as "unix_time device rx_bytes tx_bytes" lines. Start it just before
# `odonata-bench run`; read the result with link-rates.py. Needs root (ip netns exec).
set -u
out=${1:?usage: link-rates.sh OUT}
: > "$out"
for _ in $(seq 1 240); do
  ns=$(ip netns list | awk '{print $1}' | grep -E '^od[0-9]+[a-z]-br$' | head -1)
  if [ -n "$ns" ]; then
    t=$(date +%s.%N)
    ip netns exec "$ns" cat /proc/net/dev 2>/dev/null |
      awk -v t="$t" 'NR>2 {gsub(":","",$1); print t, $1, $2, $10}' >> "$out"
  fi
  sleep 0.5
done
