#!/usr/bin/env bash
# Runs Haven's whole test suite: unit tests, and CLI tests that drive the built binary against restic 0.14.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
swift build
swift test
