#!/usr/bin/env bash
# Build the image of examples/daemonset, `berth.local/log-tailer:1`: Debian's busybox, whose `tail -F`
# follows the node's log files. An archive for `berth image import`. Usage: build.sh [OUT]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/log-tailer.tar}"
python3 "$here/../images/build-image.py" --name berth.local/log-tailer:1 \
  --packages busybox-static --busybox \
  --out "$out" \
  --cmd sh
