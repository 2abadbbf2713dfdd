"""The Python `kubernetes` client against a Berth server: list, watch, create, patch, delete.

Run by crates/berth/tests/clients.rs with KUBECONFIG pointing at the server.
"""
import threading
import time

from kubernetes import client, config, watch

config.load_kube_config()
v1 = client.CoreV1Api()
assert client.VersionApi().get_code().minor == "32"

names = [ns.metadata.name for ns in v1.list_namespace().items]
assert "default" in names and "kube-system" in names, names

seen = []
w = watch.Watch()


def watcher():
    for ev in w.stream(v1.list_namespaced_config_map, namespace="default", timeout_seconds=20):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED" and ev["object"].metadata.name == "from-python":
            w.stop()


v1.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="sentinel")))
t = threading.Thread(target=watcher)
t.start()
# The watch is open once it has replayed the sentinel (synthetic ADDED for a watch without resourceVersion).
deadline = time.time() + 20
while ("ADDED", "sentinel") not in seen:
    assert time.time() < deadline, "watch never delivered the initial ADDED events"
    time.sleep(0.05)
body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="from-python"), data={"a": "b"})
v1.create_namespaced_config_map("default", body)
v1.patch_namespaced_config_map("from-python", "default", {"data": {"c": "d"}})
cm = v1.read_namespaced_config_map("from-python", "default")
assert cm.data == {"a": "b", "c": "d"}, cm.data
v1.delete_namespaced_config_map("from-python", "default")
t.join(30)
types = [t for (t, n) in seen if n == "from-python"]
assert types[0] == "ADDED" and "MODIFIED" in types and types[-1] == "DELETED", seen

apps = client.AppsV1Api()
assert apps.list_namespaced_stateful_set("default").items == []
print("python client ok")
