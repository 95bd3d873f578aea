#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine with the Rust toolchain.
# Idempotent: apt runs only when something is missing.
set -euo pipefail

# docker-registry, skopeo, containerd (+runc) and apache2-utils (htpasswd): the registry
# mirror's tests with real clients (crates/testkit/tests/mirror/clients.rs).
APT_PACKAGES=(iproute2 curl procps openssl docker-registry skopeo containerd apache2-utils tar gzip)

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-test-deps: not root and no sudo; skipping apt (tests needing these packages will say so)" >&2
    APT_PACKAGES=()
  fi
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-test-deps: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

# dockerd for the mirror's `docker pull` test: unpacked from Debian's docker.io package
# into target/test-deps/docker rather than installed, because installing it would start a
# system-wide daemon (bridge, iptables) on the machine. The test runs its own dockerd from
# there with no bridge and no iptables, and skips with the reason when it cannot.
deps="$(cd "$(dirname "$0")/.." && pwd)/target/test-deps"
if ! command -v dockerd >/dev/null 2>&1 && [ ! -x "$deps/docker/usr/sbin/dockerd" ]; then
  mkdir -p "$deps"
  if (cd "$deps" && apt-get download docker.io >/dev/null 2>&1); then
    dpkg-deb -x "$deps"/docker.io_*.deb "$deps/docker" && rm -f "$deps"/docker.io_*.deb
  else
    echo "install-test-deps: could not download docker.io; the docker pull test will skip" >&2
  fi
fi
