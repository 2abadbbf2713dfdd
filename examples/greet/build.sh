#!/usr/bin/env bash
# Build the image the seed's `greet` StatefulSet names (eduard2diaz/greet:storage, not public) as a stand-in
# from Debian's busybox: busybox httpd on port 8080 answering "Hello from <pod>! Visits: N" through a CGI
# script, with the counter in /data. An archive for `berth image import`. Usage: build.sh [OUT]
# PID 1 is a shell that stops httpd on SIGTERM: busybox httpd as PID 1 would ignore SIGTERM (a PID
# namespace's init gets no default signal actions), and every pod deletion would wait out the 30 s grace
# period before the SIGKILL. It keeps serving for one more second first, as a well-behaved server does:
# connections the Service routed to it before its endpoint was removed are still answered.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/greet.tar}"
python3 "$here/../images/build-image.py" --name eduard2diaz/greet:storage \
  --packages busybox-static --busybox \
  --mkdir /www/cgi-bin /data \
  --file /www/cgi-bin/index.cgi="$here/greet.cgi" \
  --out "$out" \
  --cmd sh -c 'httpd -f -p 8080 -h /www & pid=$!; trap "sleep 1; kill $pid; exit 0" TERM; wait $pid'
