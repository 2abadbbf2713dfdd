"""The Python `kubernetes` client's port-forward (WebSocket v4.channel.k8s.io, `?ports=`) against a Berth
server: fetch a page from a pod's port, and see the error of a port nothing listens on.

Run by crates/berth/tests/portforward.rs with KUBECONFIG pointing at the server and argv: pod name, the
pod's serving port, a dead port, the expected body.
"""
import sys

from kubernetes import client, config
from kubernetes.stream import portforward

pod, port, dead, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
config.load_kube_config()
v1 = client.CoreV1Api()


def fetch(port, send=True):
    pf = portforward(v1.connect_get_namespaced_pod_portforward, pod, "default", ports=str(port))
    sock = pf.socket(port)
    sock.setblocking(True)
    if send:
        sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            # The client closes its end of the socket pair when the error channel speaks.
            break
        if not chunk:
            break
        data += chunk
    sock.close()
    err = pf.error(port)
    pf.close()
    return data.decode(), err


for _ in range(2):
    answer, err = fetch(port)
    assert answer.startswith("HTTP/1.") and " 200 " in answer, answer
    assert answer.endswith(body + "\n"), answer
    assert err is None, err

# The agent dials at once, so the error may close the socket before anything could be sent.
answer, err = fetch(dead, send=False)
assert answer == "", answer
assert err is not None and f"error forwarding port {dead} to pod default/{pod}" in err, err
assert "Connection refused" in err, err
print("python port-forward ok")
