#!/usr/bin/env bash
# Build the image the seed's `web` StatefulSet names (k8s.gcr.io/nginx-slim:0.8) from Debian's nginx, as an
# archive for `berth image import` (or to drop into <data-dir>/agent/images/), with `nslookup` (bind9) and
# busybox tools to look around. Usage: build.sh [OUT]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/nginx-slim.tar}"
python3 "$here/../images/build-image.py" --name k8s.gcr.io/nginx-slim:0.8 \
  --packages nginx-light bind9-dnsutils libc-bin busybox-static --busybox \
  --user www-data:33:33 \
  --mkdir /var/lib/nginx /var/log/nginx /usr/share/nginx/html \
  --file /etc/nginx/nginx.conf="$here/nginx.conf" \
  --out "$out" \
  --cmd nginx -g 'daemon off;'
