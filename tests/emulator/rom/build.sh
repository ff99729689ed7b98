#!/usr/bin/env bash
# Rebuilds padtest.gb from padtest.s with sdcc's Game Boy assembler (Debian: apt-get install sdcc).
# The built ROM is committed, so the tests and CI need no assembler; rerun this after editing the source.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sdasgb -o "$work/padtest.rel" "$here/padtest.s"
sdldgb -i "$work/padtest.ihx" "$work/padtest.rel" >/dev/null
# -Z: Game Boy header (title, sizes, checksums); -yN: no licensed logo (mGBA's GBCoreCreate needs none).
makebin -Z -yN -yn NITROGENPAD "$work/padtest.ihx" "$here/padtest.gb"
echo "built $here/padtest.gb"
