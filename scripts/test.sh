#!/usr/bin/env bash
# Runs Haven's whole test suite: unit tests, and CLI tests that drive the built binary against restic 0.14.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
# pip's scripts directory holds `weed` (SeaweedFS) for the S3 tests.
export PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
swift build
swift test
