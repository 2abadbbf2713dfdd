#!/usr/bin/env bash
# Build the PostgreSQL image of examples/postgres from Debian's postgresql-15 (server binaries in
# /usr/lib/postgresql/15/bin, put first on PATH) and busybox tools, as a docker-save archive for
# `berth image import`. The server runs as the `postgres` user (uid/gid 999). Left out of the package
# closure: locales (the cluster is initialised with the C locale), LLVM (JIT is off), Perl and the
# postgresql-common wrappers (pg_ctlcluster and friends; the binaries are called directly). libreadline8,
# which the builder leaves out by default, is named for psql.
# Usage: build.sh [OUT]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/postgres.tar}"
python3 "$here/../images/build-image.py" --name berth.local/postgres:15 \
  --packages postgresql-15 postgresql-client-15 libreadline8 busybox-static --busybox \
  --exclude locales locales-all libllvm14 libz3-4 perl perl-modules-5.36 libperl5.36 libjson-perl \
    libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl postgresql-common postgresql-client-common \
    ssl-cert adduser passwd ucf init-system-helpers lsb-base sysvinit-utils openssl \
  --user postgres:999:999 \
  --mkdir /var/run/postgresql:1777 \
  --env PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data/pgdata \
  --out "$out" \
  --cmd postgres
