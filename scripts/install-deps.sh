#!/usr/bin/env bash
# Installs what building and testing Haven needs on a Debian machine: libzstd-dev (compression),
# restic 0.14 (the format oracle in tests). Runs apt-get only for what is missing.
set -euo pipefail
need=()
[ -f /usr/include/zstd.h ] || need+=(libzstd-dev)
if [ "${1:-}" = "--test" ]; then
  command -v restic >/dev/null 2>&1 || need+=(restic)
fi
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v swift >/dev/null 2>&1 || { echo "swift is not on PATH: install Swift 6 (https://swift.org/install)" >&2; exit 1; }
