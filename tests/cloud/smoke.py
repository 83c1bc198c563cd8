"""Smoke test of the local test cloud and its fake driver, over raw HTTP.

Run with the cloud venv's python:  $NLM_CLOUD_DIR/venv/bin/python tests/cloud/smoke.py [case...]
Cases: migrate force abort fail error precheck stall (the default set), many (20 servers,
SMOKE_MANY, each taking SMOKE_MANY_SECONDS, default 0), concurrent (needs a cloud started with NLM_CLOUD_MAX_CONCURRENT_LM >= 2).
Uses the admin credentials from $NLM_CLOUD_DIR/adminrc; leaves no servers behind.
"""

import fcntl
import os
import sys
import time

import requests

MC = os.environ.get("NLM_CLOUD_DIR", "/var/tmp/nlm-cloud")
RC = {}
for line in open(os.path.join(MC, "adminrc")):
    k, _, v = line.strip().removeprefix("export ").partition("=")
    RC[k] = v
S = requests.Session()
IMAGE = "3b6a1c2e-9d4f-4e8a-8c1b-6f0d2a7e5c01"


def token():
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": RC["OS_USERNAME"], "domain": {"name": RC["OS_USER_DOMAIN_NAME"]}, "password": RC["OS_PASSWORD"]}}},
        "scope": {"project": {"name": RC["OS_PROJECT_NAME"], "domain": {"name": RC["OS_PROJECT_DOMAIN_NAME"]}}}}}
    r = S.post(RC["OS_AUTH_URL"] + "/auth/tokens", json=body, timeout=10)
    r.raise_for_status()
    cat = r.json()["token"]["catalog"]
    nova = [e["url"] for s in cat if s["type"] == "compute" for e in s["endpoints"] if e["interface"] == "public"][0]
    return r.headers["X-Subject-Token"], nova


TOK, NOVA = token()
H = {"X-Auth-Token": TOK, "OpenStack-API-Version": "compute 2.96"}


def call(method, path, ok=(200, 201, 202, 204), **kw):
    r = S.request(method, NOVA + path, headers=H, timeout=30, **kw)
    assert r.status_code in ok, "%s %s -> %s %s" % (method, path, r.status_code, r.text[:400])
    return r.json() if r.content else None


def wait(pred, timeout=60, what="condition"):
    t = time.time()
    while time.time() - t < timeout:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("timeout waiting for " + what)


def flavor():
    return [f["id"] for f in call("GET", "/flavors")["flavors"] if f["name"] == "m1.tiny"][0]


def boot(name, meta=None, host="node1.maas"):
    s = call("POST", "/servers", json={"server": {
        "name": name, "imageRef": IMAGE, "flavorRef": flavor(), "networks": "none",
        "host": host, "metadata": meta or {}}})["server"]
    return s["id"]


def server(sid):
    return call("GET", "/servers/" + sid)["server"]


def wait_active(sid):
    return wait(lambda: server(sid)["status"] == "ACTIVE" and server(sid), 60, "ACTIVE " + sid)


def migrate(sid):
    call("POST", "/servers/%s/action" % sid, json={"os-migrateLive": {"host": None, "block_migration": "auto"}})


def running(sid):
    ms = call("GET", "/servers/%s/migrations" % sid)["migrations"]
    return ms[0] if ms and ms[0]["status"] == "running" and ms[0]["memory_total_bytes"] else None


def last_migration(sid):
    ms = call("GET", "/os-migrations", params={"instance_uuid": sid})["migrations"]
    return sorted(ms, key=lambda m: m["id"])[-1] if ms else None


def settled(sid):
    s = server(sid)
    return s if s["OS-EXT-STS:task_state"] is None and s["status"] in ("ACTIVE", "ERROR") else None


def final(sid):
    s = wait(lambda: settled(sid), 60, "settle " + sid)
    m = wait(lambda: (lambda m: m if m and m["status"] not in ("queued", "preparing", "running", "accepted", "pre-migrating") else None)(last_migration(sid)), 30, "migration end")
    return s, m


def host(s):
    return s["OS-EXT-SRV-ATTR:host"]


def case_migrate():
    sid = wait_active(boot("smoke-migrate", {"nlm_migration_seconds": "3"}))["id"]
    t = time.time()
    migrate(sid)
    m = wait(lambda: running(sid), 30, "running")
    seen = [m["memory_processed_bytes"]]
    time.sleep(1.1)
    m2 = running(sid)
    if m2:
        seen.append(m2["memory_processed_bytes"])
    s, m = final(sid)
    dt = time.time() - t
    assert host(s) == "node4.maas" and s["status"] == "ACTIVE" and m["status"] == "completed", (host(s), m)
    assert m2 is None or m2["memory_total_bytes"] == 64 * 1024 * 1024, m2
    assert len(seen) < 2 or seen[1] > seen[0], seen
    print("migrate: completed on node4 in %.1fs (3 s driver), processed seen %s" % (dt, seen))


def case_force():
    sid = wait_active(boot("smoke-force", {"nlm_migration_seconds": "60"}))["id"]
    migrate(sid)
    m = wait(lambda: running(sid), 30, "running")
    t = time.time()
    call("POST", "/servers/%s/migrations/%s/action" % (sid, m["id"]), json={"force_complete": None})
    s, m = final(sid)
    assert host(s) == "node4.maas" and m["status"] == "completed", (host(s), m)
    print("force-complete: completed on node4 %.1fs after the request" % (time.time() - t))


def case_abort():
    sid = wait_active(boot("smoke-abort", {"nlm_migration_seconds": "60"}))["id"]
    migrate(sid)
    m = wait(lambda: running(sid), 30, "running")
    call("DELETE", "/servers/%s/migrations/%s" % (sid, m["id"]))
    s, m = final(sid)
    assert host(s) == "node1.maas" and s["status"] == "ACTIVE" and m["status"] == "cancelled", (host(s), m)
    print("abort: cancelled, ACTIVE on node1")


def case_failure(mode, want_mig, want_status):
    sid = wait_active(boot("smoke-" + mode, {"nlm_failure": mode, "nlm_migration_seconds": "2"}))["id"]
    migrate(sid)
    s, m = final(sid)
    assert host(s) == "node1.maas" and s["status"] == want_status and m["status"] == want_mig, (host(s), s["status"], m)
    print("%s: migration %s, server %s on node1" % (mode, m["status"], s["status"]))


def case_stall():
    sid = wait_active(boot("smoke-stall", {"nlm_stall_at": "40", "nlm_migration_seconds": "2"}))["id"]
    migrate(sid)
    wait(lambda: (lambda m: m and m["memory_remaining_bytes"] <= 0.6 * m["memory_total_bytes"])(running(sid)), 30, "stall point")
    a = running(sid)
    time.sleep(2)
    b = running(sid)
    assert b and b["memory_remaining_bytes"] == a["memory_remaining_bytes"], (a, b)
    assert server(sid)["progress"] == 40, server(sid)["progress"]
    call("POST", "/servers/%s/migrations/%s/action" % (sid, b["id"]), json={"force_complete": None})
    s, m = final(sid)
    assert host(s) == "node4.maas" and m["status"] == "completed"
    print("stall: held at 40%% (remaining %d), force-completed to node4" % b["memory_remaining_bytes"])


def case_many(n=int(os.environ.get("SMOKE_MANY", "20"))):
    t = time.time()
    secs = os.environ.get("SMOKE_MANY_SECONDS", "0")
    ids = [boot("smoke-many-%d" % i, {"nlm_migration_seconds": secs}) for i in range(n)]
    for i in ids:
        wait_active(i)
    print("many: booted %d in %.1fs" % (n, time.time() - t))
    t = time.time()
    for i in ids:
        migrate(i)
    for i in ids:
        wait(lambda: (lambda s: s and host(s) == "node4.maas" and s)(settled(i)), 600, "migrated " + i)
    print("many: migrated %d in %.1fs (driver %s s, max_concurrent_live_migrations from nova.conf)" % (n, time.time() - t, secs))


def case_concurrent():
    """Needs a cloud started with NLM_CLOUD_MAX_CONCURRENT_LM >= 2."""
    a = wait_active(boot("smoke-conc-a", {"nlm_migration_seconds": "60"}))["id"]
    b = wait_active(boot("smoke-conc-b", {"nlm_migration_seconds": "60"}))["id"]
    migrate(a)
    migrate(b)
    ma = wait(lambda: running(a), 30, "a running")
    mb = wait(lambda: running(b), 30, "b running")
    call("DELETE", "/servers/%s/migrations/%s" % (a, ma["id"]))
    sa, ma = final(a)
    mb2 = running(b)
    assert mb2 and mb2["memory_processed_bytes"] >= mb["memory_processed_bytes"], "b still running"
    call("POST", "/servers/%s/migrations/%s/action" % (b, mb2["id"]), json={"force_complete": None})
    sb, mb = final(b)
    assert ma["status"] == "cancelled" and host(sa) == "node1.maas", ma
    assert mb["status"] == "completed" and host(sb) == "node4.maas", mb
    print("concurrent: a aborted (cancelled on node1) while b kept running, then b force-completed to node4")


def cleanup():
    for s in call("GET", "/servers", params={"all_tenants": "1"})["servers"]:
        if s["name"].startswith("smoke-"):
            call("DELETE", "/servers/" + s["id"], ok=(204, 404))
    wait(lambda: not [s for s in call("GET", "/servers", params={"all_tenants": "1"})["servers"] if s["name"].startswith("smoke-")], 120, "cleanup")


CASES = {
    "migrate": case_migrate, "force": case_force, "abort": case_abort,
    "fail": lambda: case_failure("fail", "failed", "ACTIVE"),
    "error": lambda: case_failure("error", "error", "ERROR"),
    "precheck": lambda: case_failure("precheck", "error", "ACTIVE"),
    "stall": case_stall, "many": case_many, "concurrent": case_concurrent,
}

if __name__ == "__main__":
    names = sys.argv[1:] or [c for c in CASES if c not in ("many", "concurrent")]
    # the same lock as the Rust tests' CloudEnv::lock(): never run beside them
    lock = open(os.path.join(MC, "tests.lock"), "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        for c in names:
            CASES[c]()
    finally:
        cleanup()
    print("smoke: %d passed, 0 failed" % len(names))
