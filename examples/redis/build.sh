#!/usr/bin/env bash
# Build the redis image of examples/redis from Debian's redis (7.0: `redis-server`, with redis-cli from
# `redis-tools`) and busybox tools, as a docker-save archive for `berth image import`. Usage: build.sh [OUT]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/redis.tar}"
python3 "$here/../images/build-image.py" --name berth.local/redis:7.0 \
  --packages redis-server redis-tools busybox-static --busybox \
  --exclude adduser passwd perl perl-modules-5.36 libperl5.36 libfile-find-rule-perl libnumber-compare-perl \
    libtext-glob-perl init-system-helpers lsb-base sysvinit-utils \
  --mkdir /data \
  --out "$out" \
  --cmd redis-server
