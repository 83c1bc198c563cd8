"""Records the progress series of real live migrations on the libvirt cloud.

Run with the cloud venv's python, the cloud up in libvirt mode:

  NLM_CLOUD_VIRT=libvirt tests/cloud/cloud up
  $NLM_CLOUD_DIR/venv/bin/python tests/cloud/libvirt/record.py OUT_DIR [CASE...]

Cases (default: idle dirty-2-200 dirty-4-200 dirty-8-200 dirty-16-200
dirty-8-200:abort):
an image ``nlm-guest-<name>`` (idle, or dirty-MIB-MS: MIB MiB of random
data rewritten every MS ms), with ``:abort`` to abort instead of
force-completing. For each it boots
one m1.small server of that image on node1.maas, waits
for the guest's first heartbeat, live-migrates it to node4.maas with
``block_migration: "auto"`` and polls ``GET /servers/{id}/migrations/{mid}``
every second (the computes' ``live_migration_monitor_interval`` is 1 s).
A migration still running after --watch seconds (default 30) is
force-completed (``POST .../action {"force_complete": null}``) or, for an
``:abort`` case, aborted (``DELETE /servers/{id}/migrations/{mid}``); after
that the record and the server are watched for 10 s more (``after``: every
change of the record's status and the server's vm_state, with its time: an
abort ends "cancelled", then often "error", sometimes with the instance in
ERROR). Writes OUT_DIR/<case>.json (``:`` becomes ``-``):

  {"case", "image", "bandwidth_mib_s", "poll_s", "started_at",
   "samples": [{"t": seconds since the POST, "status",
                "memory_total_bytes", "memory_processed_bytes",
                "memory_remaining_bytes", "disk_total_bytes",
                "disk_processed_bytes", "disk_remaining_bytes"}...],
   "action": "force_complete"|"abort"|null, "action_at": t or null,
   "after": [{"t", "migration_status", "vm_state"}...],
   "final": {"status", "host", "vm_state", "t"}, "boot_id_kept": true|false,
   "downtime_ms": QEMU's "Total downtime" of the completed incoming job on
                  node4 (virsh domjobinfo --completed) or null}

Only the first 'running' sample onward is kept, and every sample of a
settled migration past the last running one is dropped except the first.
The server is deleted at the end. Prints one line per case. Holds
``$NLM_CLOUD_DIR/tests.lock`` (the tests' lock) while it runs.
"""

import fcntl
import json
import os
import re
import subprocess
import sys
import time

import requests

E = os.environ
MC = E.get("NLM_CLOUD_DIR", "/var/tmp/nlm-cloud-libvirt")
MV = {"OpenStack-API-Version": "compute 2.96", "X-OpenStack-Nova-API-Version": "2.96"}
S = requests.Session()


def rc():
    out = {}
    for line in open(os.path.join(MC, "adminrc")):
        line = line.strip().removeprefix("export ")
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v.strip("'\"")
    return out


def token(os_):
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": os_["OS_USERNAME"], "domain": {"name": "Default"},
            "password": os_["OS_PASSWORD"]}}},
        "scope": {"project": {"name": os_["OS_PROJECT_NAME"], "domain": {"name": "Default"}}}}}
    r = S.post(os_["OS_AUTH_URL"] + "/auth/tokens", json=body, timeout=10)
    r.raise_for_status()
    cat = r.json()["token"]["catalog"]
    nova = [e["url"] for s in cat if s["type"] == "compute" for e in s["endpoints"]
            if e["interface"] == "public"][0]
    glance = [e["url"] for s in cat if s["type"] == "image" for e in s["endpoints"]
              if e["interface"] == "public"][0]
    return r.headers["X-Subject-Token"], nova, glance


class Nova:
    def __init__(self):
        tok, self.base, self.glance = token(rc())
        self.h = dict(MV, **{"X-Auth-Token": tok})

    def req(self, method, path, ok=(200, 201, 202, 204), **kw):
        r = S.request(method, self.base + path, headers=self.h, timeout=30, **kw)
        if r.status_code not in ok:
            raise RuntimeError("%s %s -> %s %s" % (method, path, r.status_code, r.text[:300]))
        return r.json() if r.content else None

    def image_id(self, name):
        r = S.get(self.glance.rstrip("/") + "/v2/images", headers=self.h, timeout=10)
        return [i["id"] for i in r.json()["images"] if i["name"] == name][0]

    def flavor_id(self, name):
        return [f["id"] for f in self.req("GET", "/flavors")["flavors"] if f["name"] == name][0]

    def console(self, sid):
        return self.req("POST", "/servers/%s/action" % sid,
                        json={"os-getConsoleOutput": {"length": 40}})["output"]


def completed_downtime_ms(addr, domain):
    """QEMU's own measure of the guest's pause at switch-over: libvirt's
    completed incoming-migration job on the destination (``virsh
    domjobinfo --completed``, "Total downtime"); None if not reported."""
    out = subprocess.run(["virsh", "-q", "-c", "qemu+tcp://%s/system" % addr, "domjobinfo",
                          domain, "--completed"], capture_output=True, text=True, timeout=20)
    m = re.search(r"^Total downtime:\s+(\d+)\s+ms", out.stdout, re.M)
    return int(m.group(1)) if m else None


def boot_ids(text):
    return set(re.findall(r"nlm-heartbeat boot=([0-9a-f-]+)", text))


def wait(pred, timeout, what):
    t0 = time.monotonic()
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() - t0 > timeout:
            raise RuntimeError("timed out after %ss: %s" % (timeout, what))
        time.sleep(0.5)


def record(nova, case, watch):
    name, _, mode = case.partition(":")
    image = "nlm-guest-" + name
    body = {"server": {"name": "rec-" + case.replace(":", "-"), "imageRef": nova.image_id(image),
                       "flavorRef": nova.flavor_id("m1.small"), "networks": "none",
                       "host": "node1.maas"}}
    sid = nova.req("POST", "/servers", json=body)["server"]["id"]
    try:
        def active():
            s = nova.req("GET", "/servers/" + sid)["server"]
            if s["status"] == "ERROR":
                raise RuntimeError("boot failed: %s" % s.get("fault"))
            return s["status"] == "ACTIVE" and s
        wait(active, 120, "ACTIVE")
        ids = wait(lambda: boot_ids(nova.console(sid)), 60, "first heartbeat")
        time.sleep(3)  # the dirtying loop has started (its sources are made at boot)
        t0 = time.monotonic()
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        nova.req("POST", "/servers/%s/action" % sid,
                 json={"os-migrateLive": {"host": "node4.maas", "block_migration": "auto"}})
        samples, mid, fc_at = [], None, None
        keys = ("memory_total_bytes", "memory_processed_bytes", "memory_remaining_bytes",
                "disk_total_bytes", "disk_processed_bytes", "disk_remaining_bytes")
        while time.monotonic() - t0 < watch + 60:
            t = round(time.monotonic() - t0, 2)
            if mid is None:
                ms = nova.req("GET", "/servers/%s/migrations" % sid)["migrations"]
                if ms:
                    mid = ms[0]["id"]
            m = None
            if mid is not None:
                r = S.get("%s/servers/%s/migrations/%s" % (nova.base, sid, mid),
                          headers=nova.h, timeout=30)
                m = r.json()["migration"] if r.status_code == 200 else None
            if m is not None:
                samples.append(dict({"t": t, "status": m["status"]}, **{k: m.get(k) for k in keys}))
            elif mid is not None:
                # the record left the in-progress list: settled
                break
            if fc_at is None and m is not None and m["status"] == "running" and t >= watch:
                if mode == "abort":
                    nova.req("DELETE", "/servers/%s/migrations/%s" % (sid, mid))
                else:
                    nova.req("POST", "/servers/%s/migrations/%s/action" % (sid, mid),
                             json={"force_complete": None})
                fc_at = t
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0 - t)))
        def state():
            s = nova.req("GET", "/servers/" + sid)["server"]
            m = [m for m in nova.req("GET", "/os-migrations?instance_uuid=%s" % sid)["migrations"]
                 if m["migration_type"] == "live-migration"][0]
            return s, m
        changes, t_end = [], time.monotonic() + 10
        while True:
            s, final_m = state()
            now = {"t": round(time.monotonic() - t0, 1), "migration_status": final_m["status"],
                   "vm_state": s["OS-EXT-STS:vm_state"]}
            if not changes or (changes[-1]["migration_status"], changes[-1]["vm_state"]) != (
                    now["migration_status"], now["vm_state"]):
                changes.append(now)
            if time.monotonic() > t_end and s["OS-EXT-STS:task_state"] is None:
                break
            time.sleep(0.5)
        time.sleep(2)
        after = boot_ids(nova.console(sid))
        downtime = None
        if s["OS-EXT-SRV-ATTR:host"] == "node4.maas":
            downtime = completed_downtime_ms("127.0.0.3", s["OS-EXT-SRV-ATTR:instance_name"])
        out = {"case": case, "image": image, "bandwidth_mib_s": 20, "poll_s": 1,
               "monitor_interval_s": 1, "started_at": started,
               "samples": [x for x in samples if x["status"] in ("running", "preparing", "queued",
                                                                   "accepted")],
               "action": None if fc_at is None else
               ("abort" if mode == "abort" else "force_complete"),
               "action_at": fc_at, "after": changes,
               "final": {"status": final_m["status"], "host": s["OS-EXT-SRV-ATTR:host"],
                         "vm_state": s["OS-EXT-STS:vm_state"],
                         "t": changes[-1]["t"]},
               "boot_id_kept": after == ids, "downtime_ms": downtime}
        return out
    finally:
        nova.req("DELETE", "/servers/" + sid, ok=(204, 404))
        wait(lambda: S.get(nova.base + "/servers/" + sid, headers=nova.h,
                           timeout=10).status_code == 404, 60, "deleted")


def main():
    args = sys.argv[1:]
    watch = 30
    if "--watch" in args:
        i = args.index("--watch")
        watch = float(args[i + 1])
        del args[i:i + 2]
    if not args:
        sys.exit(__doc__)
    out_dir = args[0]
    cases = args[1:] or ["idle", "dirty-2-200", "dirty-4-200", "dirty-8-200", "dirty-16-200",
                         "dirty-8-200:abort"]
    os.makedirs(out_dir, exist_ok=True)
    # the Rust tests' cloud lock (CloudEnv::lock): never beside a test
    # (NLM_CLOUD_LOCK_HELD: the caller holds it, e.g. around restart-computes)
    lock = open(os.path.join(MC, "tests.lock"), "a")
    if not E.get("NLM_CLOUD_LOCK_HELD"):
        fcntl.flock(lock, fcntl.LOCK_EX)
    nova = Nova()
    for case in cases:
        rec = record(nova, case, watch)
        with open(os.path.join(out_dir, case.replace(":", "-") + ".json"), "w") as f:
            json.dump(rec, f, indent=1)
            f.write("\n")
        print("%s: %d samples, %s at %s, final %s on %s (vm_state %s) at %.1f s, boot id kept %s,"
              " downtime %s ms" % (
                  case, len(rec["samples"]), rec["action"], rec["action_at"],
                  rec["final"]["status"], rec["final"]["host"], rec["final"]["vm_state"],
                  rec["final"]["t"], rec["boot_id_kept"], rec["downtime_ms"]), flush=True)


if __name__ == "__main__":
    main()
