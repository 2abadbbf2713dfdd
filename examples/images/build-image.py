#!/usr/bin/env python3
"""Build a container image from Debian packages, as a `docker save` archive for `berth image import`.

No registry and no container daemon: the packages and their dependency closure are fetched with
`apt-get download` (from the machine's configured Debian mirror), unpacked with `dpkg-deb -x` into one
root filesystem, completed with what maintainer scripts would have made (users, directories, files),
and written as a single-layer image.

    build-image.py --name k8s.gcr.io/nginx-slim:0.8 --packages nginx-light busybox-static \\
        --busybox --file etc/nginx/nginx.conf=nginx.conf --cmd nginx -g 'daemon off;' --out web.tar

Options:
  --name NAME           image name (RepoTags); repeat it to give the one image several tags
  --packages PKG...     Debian packages to install (with their Depends/Pre-Depends closure)
  --exclude PKG...      packages of the closure to leave out (maintainer-script machinery by default;
                        a package named in --packages is always installed)
  --busybox             add busybox applet links (sh, ls, cat, kill, ...) for tools the image lacks
  --mkdir DIR...        directories to create (mode 0755, or DIR:MODE:UID:GID)
  --file DEST=SRC       copy a local file into the image (with its mode)
  --user NAME:UID:GID   add a user and its group to /etc/passwd and /etc/group
  --env K=V             environment (PATH is set to the usual directories unless given)
  --cmd ARG...          the image's Cmd (must be last)
  --cache DIR           where downloaded .deb files are kept between builds (default $BERTH_DEB_CACHE or
                        ~/.cache/berth-debs)
  --out FILE            the archive to write
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

DEFAULT_EXCLUDE = {
    "debconf", "cdebconf", "dpkg", "install-info", "libdebian-installer4", "libnewt0.52", "libslang2",
    "libtextwrap1", "readline-common", "libreadline8", "tar", "perl-base", "debconf-2.0",
}
BUSYBOX_APPLETS = [
    "sh", "ash", "ls", "cat", "echo", "kill", "ps", "hostname", "sleep", "mkdir", "rm", "cp", "mv", "test",
    "wget", "nc", "nslookup", "grep", "sed", "head", "tail", "id", "env", "date", "df", "du", "touch",
    "chmod", "chown", "ln", "true", "false", "stty", "tr", "wc", "sort", "uname", "vi", "find", "xargs",
    "httpd",
]


def run(*args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def depends(packages):
    """Real package names of the Depends/Pre-Depends closure (virtual ones, in <>, are skipped)."""
    try:
        out = run("apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                  "--no-breaks", "--no-replaces", "--no-enhances", *packages).stdout
    except subprocess.CalledProcessError:
        return set()
    return {line.strip() for line in out.splitlines() if line and not line.startswith((" ", "<"))}


def closure(packages, exclude):
    names = depends(packages)
    if not set(packages) <= names:
        # No package lists on this machine yet: fetch them once (root), then retry.
        if os.geteuid() != 0:
            sys.exit(f"build-image: apt knows none of {packages}; run `apt-get update` first")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        names = depends(packages)
    # A package named in --packages is installed even when the default exclusions list it.
    return sorted(n for n in names if n not in exclude or n in packages)


def download(packages, cache):
    os.makedirs(cache, exist_ok=True)
    have = {f.split("_")[0]: f for f in os.listdir(cache) if f.endswith(".deb")}
    missing = [p for p in packages if p.split(":")[0] not in have]
    if missing:
        # apt-get download runs as the `_apt` user when root: the cache must be writable by it.
        os.chmod(cache, 0o777)
        fetch = ["apt-get", "download", "-qq", *missing]
        if subprocess.run(fetch, cwd=cache, stdout=subprocess.DEVNULL).returncode != 0:
            # Stale package lists (a version no longer on the mirror): refresh them once and retry.
            if os.geteuid() != 0:
                sys.exit("build-image: apt-get download failed; run `apt-get update` first")
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(fetch, cwd=cache, check=True, stdout=subprocess.DEVNULL)
        have = {f.split("_")[0]: f for f in os.listdir(cache) if f.endswith(".deb")}
    return [os.path.join(cache, have[p.split(":")[0]]) for p in packages]


def main(argv):
    opts = {"packages": [], "exclude": [], "mkdir": [], "file": [], "user": [], "env": [], "cmd": []}
    names, out = [], None
    cache = os.environ.get("BERTH_DEB_CACHE") or os.path.expanduser("~/.cache/berth-debs")
    busybox = False
    key = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--cmd":
            opts["cmd"] = argv[i + 1:]
            break
        if a == "--busybox":
            busybox, key = True, None
        elif a == "--name":
            names.append(argv[i + 1])
            i += 1
        elif a == "--out":
            out, i = argv[i + 1], i + 1
        elif a == "--cache":
            cache, i = argv[i + 1], i + 1
        elif a.startswith("--") and a[2:] in opts:
            key = a[2:]
        elif key:
            opts[key].append(a)
        else:
            sys.exit(f"build-image: unexpected argument {a!r}\n{__doc__}")
        i += 1
    if not names or not out or not opts["packages"]:
        sys.exit(__doc__)

    exclude = DEFAULT_EXCLUDE | set(opts["exclude"])
    pkgs = closure(opts["packages"], exclude)
    debs = download(pkgs, cache)
    root = tempfile.mkdtemp(prefix="berth-image-")
    try:
        for deb in debs:
            run("dpkg-deb", "-x", deb, root)
        for d in ["tmp", "run", "var/tmp", "proc", "sys", "dev", "etc", "root"]:
            os.makedirs(os.path.join(root, d), exist_ok=True)
        os.chmod(os.path.join(root, "tmp"), 0o1777)
        users = [("root", 0, 0, "/root", "/bin/sh"), ("nobody", 65534, 65534, "/nonexistent", "/usr/sbin/nologin")]
        for u in opts["user"]:
            n, uid, gid = u.split(":")
            users.append((n, int(uid), int(gid), "/nonexistent", "/usr/sbin/nologin"))
        with open(os.path.join(root, "etc/passwd"), "w") as f:
            for n, uid, gid, home, shell in users:
                f.write(f"{n}:x:{uid}:{gid}:{n}:{home}:{shell}\n")
        with open(os.path.join(root, "etc/group"), "w") as f:
            for n, _, gid, _, _ in users:
                f.write(f"{n if gid != 65534 else 'nogroup'}:x:{gid}:\n")
        for spec in opts["mkdir"]:
            parts = spec.split(":")
            d = os.path.join(root, parts[0].lstrip("/"))
            os.makedirs(d, exist_ok=True)
            if len(parts) > 1:
                os.chmod(d, int(parts[1], 8))
        for spec in opts["file"]:
            dest, src = spec.split("=", 1)
            d = os.path.join(root, dest.lstrip("/"))
            os.makedirs(os.path.dirname(d), exist_ok=True)
            shutil.copy(src, d)  # with its mode (a script stays executable)
        if busybox:
            bb = "/bin/busybox" if os.path.exists(os.path.join(root, "bin/busybox")) else "/usr/bin/busybox"
            if not os.path.exists(os.path.join(root, bb.lstrip("/"))):
                sys.exit("build-image: --busybox needs the busybox-static package in --packages")
            for applet in BUSYBOX_APPLETS:
                if not any(os.path.lexists(os.path.join(root, d, applet)) for d in ["bin", "usr/bin", "sbin", "usr/sbin"]):
                    os.makedirs(os.path.join(root, "bin"), exist_ok=True)
                    os.symlink(bb, os.path.join(root, "bin", applet))

        # One layer, owned by root, in a stable order.
        layer = io.BytesIO()
        with tarfile.open(fileobj=layer, mode="w", format=tarfile.GNU_FORMAT) as t:
            def owned(ti):
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = "root"
                return ti
            for entry in sorted(os.listdir(root)):
                t.add(os.path.join(root, entry), arcname=entry, filter=owned)
        layer = layer.getvalue()
        diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
        env = opts["env"]
        if not any(e.startswith("PATH=") for e in env):
            env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + env
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "config": {"Env": env, "Cmd": opts["cmd"] or ["/bin/sh"]},
                             "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
        manifest = json.dumps([{"Config": "config.json", "RepoTags": names, "Layers": ["layer.tar"]}]).encode()
        tmp = out + ".tmp"
        with tarfile.open(tmp, mode="w") as t:
            for n, data in [("manifest.json", manifest), ("config.json", config), ("layer.tar", layer)]:
                ti = tarfile.TarInfo(n)
                ti.size = len(data)
                ti.mode = 0o644
                t.addfile(ti, io.BytesIO(data))
        os.replace(tmp, out)
        print(f"{out}: {', '.join(names)} ({len(pkgs)} packages, {len(layer) // (1 << 20)} MiB)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
