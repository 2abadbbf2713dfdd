#!/usr/bin/env bash
# Build the etcd image of examples/etcd from Debian's etcd (3.4: `etcd-server` for etcd, `etcd-client` for
# etcdctl) with busybox tools, as a docker-save archive for `berth image import`. The one image carries two
# tags, :3.4.23 and :3.4.23-b, so a rolling update to a "new image" can be tried without a second build.
# Usage: build.sh [OUT]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/etcd.tar}"
python3 "$here/../images/build-image.py" \
  --name berth.local/etcd:3.4.23 --name berth.local/etcd:3.4.23-b \
  --packages etcd-server etcd-client busybox-static --busybox \
  --exclude adduser passwd perl perl-modules-5.36 libperl5.36 libfile-find-rule-perl libnumber-compare-perl \
    libtext-glob-perl init-system-helpers \
  --mkdir /var/lib/etcd \
  --env ETCDCTL_API=3 \
  --out "$out" \
  --cmd etcd
