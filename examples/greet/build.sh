#!/usr/bin/env bash
# Build the image the seed's `greet` StatefulSet names (eduard2diaz/greet:storage, not public) as a stand-in
# from Debian's busybox: busybox httpd on port 8080 answering "Hello from <pod>! Visits: N" through a CGI
# script, with the counter in /data. An archive for `berth image import`. Usage: build.sh [OUT]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/greet.tar}"
python3 "$here/../images/build-image.py" --name eduard2diaz/greet:storage \
  --packages busybox-static --busybox \
  --mkdir /www/cgi-bin /data \
  --file /www/cgi-bin/index.cgi="$here/greet.cgi" \
  --out "$out" \
  --cmd httpd -f -p 8080 -h /www
