#!/usr/bin/env bash
# Installs everything Trustplane needs on a fresh Debian machine: the system tools the VM,
# deploy-sandbox and guest tests drive (bubblewrap, QEMU, busybox, iproute2, socat) when missing,
# then the npm workspace (better-sqlite3 compiles from source; npm 11 runs it via allowScripts).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v prlimit >/dev/null 2>&1 || missing+=(util-linux)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing system packages: ${missing[*]} (run as root or install them with apt-get)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The tiny QEMU guest (Debian kernel + busybox initramfs, scripts/build-guest.sh) is built once
# here, so the QEMU tests and the demo do not spend their timeouts downloading a kernel. It is
# idempotent (skips a guest of the same GUEST_VERSION) and never fatal: without a Debian mirror
# the qemu driver builds it on first use instead.
if command -v qemu-system-x86_64 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  if ! bash scripts/build-guest.sh; then
    if [ "$(id -u)" -eq 0 ]; then
      apt-get update -qq && bash scripts/build-guest.sh || echo "setup: could not build the tiny QEMU guest; the qemu driver will try on first use" >&2
    else
      echo "setup: could not build the tiny QEMU guest; the qemu driver will try on first use" >&2
    fi
  fi
fi

# `npm install` rather than `npm ci`: it follows package-lock.json for every package the
# registry serves, while `npm ci` insists on platform binaries this registry mirror lacks
# (buf's macOS/Windows builds answer 404 here).
npm install --no-audit --no-fund
