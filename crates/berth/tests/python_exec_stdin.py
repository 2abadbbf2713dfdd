"""The Python `kubernetes` client's exec stream with stdin (issue 15 item 16), on both channel protocols.

Run by crates/berth/tests/clients.rs with KUBECONFIG pointing at a server whose pod `shell` runs.
A line written to stdin reaches the shell and its output comes back while stdin stays open; closing the
stream (v4: the only way a client ends its input) gives the shell end of file, so it exits.
"""
import time

from kubernetes import client, config
from kubernetes.stream import stream

config.load_kube_config()
v1 = client.CoreV1Api()


def read_until(resp, want, secs):
    out = ""
    deadline = time.time() + secs
    while want not in out and time.time() < deadline and resp.is_open():
        resp.update(timeout=0.2)
        if resp.peek_stdout():
            out += resp.read_stdout()
    return out


def marker_exists(name):
    out = stream(v1.connect_get_namespaced_pod_exec, "shell", "default",
                 command=["/bin/sh", "-c", f"test -e /tmp/{name} && echo yes || echo no"],
                 stdin=False, stdout=True, stderr=True, tty=False)
    return out.strip() == "yes"


for protocol in ["v4.channel.k8s.io", None]:
    extra = {"_headers": {"sec-websocket-protocol": protocol}} if protocol else {}
    marker = (protocol or "default").split(".")[0] + "-eof"
    resp = stream(v1.connect_get_namespaced_pod_exec, "shell", "default",
                  command=["/bin/sh", "-c", f"sh; touch /tmp/{marker}"],
                  stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False, **extra)
    if protocol:
        assert resp.subprotocol == protocol, resp.subprotocol
    t = time.time()
    resp.write_stdin("echo hi\n")
    out = read_until(resp, "hi\n", 5)
    assert "hi\n" in out, f"{protocol}: no output within 5 s while stdin is open: {out!r}"
    assert resp.is_open(), protocol
    resp.write_stdin("echo there\n")
    out = read_until(resp, "there\n", 5)
    assert "there\n" in out, f"{protocol}: second line: {out!r}"
    print(f"{resp.subprotocol}: first line answered in {time.time() - t:.3f} s")
    assert not marker_exists(marker), f"{protocol}: the shell ended while stdin was open"
    resp.close()
    deadline = time.time() + 5
    while not marker_exists(marker):
        assert time.time() < deadline, f"{protocol}: closing the stream did not end the shell's input"
        time.sleep(0.2)

print("python exec stdin ok")
