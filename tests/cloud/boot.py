"""Boot m1.tiny servers pinned to one compute host of the local cloud and wait until they settle.

Run with the cloud venv's python:
    $NLM_CLOUD_DIR/venv/bin/python tests/cloud/boot.py [--host node1.maas] NAME[:key=value[,key=value...]] ...

Each NAME may carry server metadata for the fake driver (nlm_migration_seconds=5, nlm_failure=fail,
nlm_stall_at=60, ...) and the pseudo key state=paused|stopped to pause or stop it once ACTIVE.
Prints one line per server: id, name, status. Uses smoke.py's helpers (admin from $NLM_CLOUD_DIR/adminrc).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
argv, sys.argv = sys.argv[1:], sys.argv[:1]
import smoke  # noqa: E402  (takes a token at import)


def main(args):
    host = "node1.maas"
    if args[:1] == ["--host"]:
        host, args = args[1], args[2:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    wanted = []
    for spec in args:
        name, _, rest = spec.partition(":")
        meta = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
        state = meta.pop("state", None)
        wanted.append((smoke.boot(name, meta, host), name, state))
    for sid, name, state in wanted:
        smoke.wait_active(sid)
        if state == "paused":
            smoke.call("POST", "/servers/%s/action" % sid, json={"pause": None})
            smoke.wait(lambda: smoke.server(sid)["status"] == "PAUSED", 60, "PAUSED " + name)
        elif state == "stopped":
            smoke.call("POST", "/servers/%s/action" % sid, json={"os-stop": None})
            smoke.wait(lambda: smoke.server(sid)["status"] == "SHUTOFF", 60, "SHUTOFF " + name)
        print("%s %-12s %s" % (sid, name, smoke.server(sid)["status"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(argv))
