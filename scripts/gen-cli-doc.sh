#!/usr/bin/env bash
# Regenerates docs/cli.md from the commands' own --help text, so the reference never drifts from the code.
set -euo pipefail
cd "$(dirname "$0")/.."
HAVEN=${HAVEN:-.build/debug/haven}
[ -x "$HAVEN" ] || swift build
{
  echo "# haven command reference"
  echo
  echo "Generated from \`haven COMMAND --help\` by \`scripts/gen-cli-doc.sh\`; do not edit by hand."
  echo
  echo '```'
  COLUMNS=100 "$HAVEN" --help
  echo '```'
  for cmd in init backup snapshots ls find diff cat stats restore check forget prune unlock cache "key list" "key add" "key remove" "key passwd" copy version daemon "config check" "config hash-password" status run jobs log cancel; do
    echo
    echo "## haven $cmd"
    echo
    echo '```'
    COLUMNS=100 $HAVEN $cmd --help
    echo '```'
  done
} > docs/cli.md
echo "wrote docs/cli.md"
