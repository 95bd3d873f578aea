#!/usr/bin/env bash
# Installs what the benchmark scenarios need (Debian packages only): the BitTorrent baseline
# (opentracker, aria2c, mktorrent), curl for the direct baseline, matplotlib for the charts.
# Not part of scripts/test-all.sh: benchmarks are not run in CI.
set -euo pipefail
PKGS=(iproute2 curl procps opentracker aria2 mktorrent python3-matplotlib)
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "bench setup: ${PKGS[*]} present"
