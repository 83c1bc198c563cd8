"""Control helper of the local test cloud, run with the cloud venv's python.

Subcommands (configuration comes from the environment set by ./cloud):
  seed-keystone   service users, catalog, service_domain/services/nova_live_migration,
                  writes adminrc and relation.json
  seed-nova       flavors m1.tiny, m1.small and the extra-spec ones (nlm.vtpm, nlm.vtpm-host, nlm.vgpu, nlm.pci)
  wait-computes SINCE TIMEOUT
                  wait until every compute host is up with a heartbeat newer
                  than SINCE (epoch seconds) and is listed as a hypervisor
  healthy         exit 0 when Keystone, Nova and all computes answer and are up
  reset           enable every nova-compute service, abort migrations, delete
                  every server, wait until none remain
"""

import datetime
import json
import os
import secrets
import sys
import time

import requests

E = os.environ
MC = E["NLM_CLOUD_DIR"]
KS = "http://127.0.0.1:%s/v3" % E["NLM_CLOUD_KEYSTONE_PORT"]
NOVA = "http://127.0.0.1:%s/v2.1" % E["NLM_CLOUD_NOVA_PORT"]
ADMIN_PW = E.get("NLM_CLOUD_ADMIN_PASSWORD", "admin")
HOSTS = E.get("NLM_CLOUD_HOSTS", "node1.maas node4.maas").split()
# Hypervisor name = service host + this (".maas" with NLM_CLOUD_SHORT_HOSTS).
NODE_SUFFIX = E.get("NLM_CLOUD_NODE_SUFFIX", "")
MV = {"OpenStack-API-Version": "compute 2.96", "X-OpenStack-Nova-API-Version": "2.96"}

S = requests.Session()


def log(msg):
    print("[cloudctl] " + msg, file=sys.stderr, flush=True)


def token():
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"name": "Default"}, "password": ADMIN_PW}}},
        "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}}
    r = S.post(KS + "/auth/tokens", json=body, timeout=10)
    r.raise_for_status()
    return r.headers["X-Subject-Token"]


class Api:
    def __init__(self, base, tok, extra=None):
        self.base, self.h = base, {"X-Auth-Token": tok}
        self.h.update(extra or {})

    def req(self, method, path, ok=(200, 201, 202, 204), **kw):
        r = S.request(method, self.base + path, headers=self.h, timeout=30, **kw)
        if r.status_code not in ok:
            raise RuntimeError("%s %s -> %s %s" % (method, path, r.status_code, r.text[:300]))
        return r.json() if r.content else None

    def get(self, path, **kw):
        return self.req("GET", path, **kw)


# ---------------------------------------------------------------- keystone
def find_one(ks, coll, **params):
    items = ks.get("/" + coll, params=params)[coll]
    return items[0] if items else None


def ensure(ks, coll, single, match, body):
    cur = find_one(ks, coll, **match)
    if cur:
        return cur
    return ks.req("POST", "/" + coll, json={single: body})[single]


def ensure_user(ks, name, domain_id, password, project_id, roles):
    u = find_one(ks, "users", name=name, domain_id=domain_id)
    if u is None:
        u = ks.req("POST", "/users", json={"user": {
            "name": name, "domain_id": domain_id, "password": password, "enabled": True}})["user"]
    else:
        ks.req("PATCH", "/users/" + u["id"], json={"user": {"password": password, "enabled": True}})
    for r in roles:
        ks.req("PUT", "/projects/%s/users/%s/roles/%s" % (project_id, u["id"], r["id"]))
    return u


def seed_keystone():
    ks = Api(KS, token())
    default = ks.get("/domains/default")["domain"]
    admin_role = find_one(ks, "roles", name="admin")
    service_role = ensure(ks, "roles", "role", {"name": "service"}, {"name": "service"})
    service_proj = ensure(ks, "projects", "project", {"name": "service", "domain_id": "default"},
                          {"name": "service", "domain_id": "default", "description": "OpenStack services"})
    for name in ("nova", "placement"):
        ensure_user(ks, name, "default", name, service_proj["id"], [admin_role, service_role])

    catalog = [
        ("identity", "keystone", "http://127.0.0.1:%s/v3" % E["NLM_CLOUD_KEYSTONE_PORT"]),
        ("compute", "nova", "http://127.0.0.1:%s/v2.1" % E["NLM_CLOUD_NOVA_PORT"]),
        ("placement", "placement", "http://127.0.0.1:%s" % E["NLM_CLOUD_PLACEMENT_PORT"]),
        ("image", "glance", "http://127.0.0.1:%s" % E["NLM_CLOUD_GLANCE_PORT"]),
        ("network", "neutron", "http://127.0.0.1:%s" % E["NLM_CLOUD_NEUTRON_PORT"]),
        # The Manila stand-in (stubs.py); sharev2 is the type real
        # deployments register, an alias of shared-file-system, which is
        # what Nova's nova/share/manila.py asks openstacksdk for.
        ("sharev2", "manilav2", "http://127.0.0.1:%s/v2" % E["NLM_CLOUD_MANILA_PORT"]),
    ]
    for stype, sname, url in catalog:
        svc = ensure(ks, "services", "service", {"type": stype}, {"type": stype, "name": sname, "enabled": True})
        for iface in ("public", "internal", "admin"):
            eps = ks.get("/endpoints", params={"service_id": svc["id"], "interface": iface})["endpoints"]
            eps = [e for e in eps if e.get("region_id") == "RegionOne"]
            if not eps:
                ks.req("POST", "/endpoints", json={"endpoint": {
                    "service_id": svc["id"], "interface": iface, "url": url,
                    "region_id": "RegionOne", "enabled": True}})
            elif eps[0]["url"] != url:
                ks.req("PATCH", "/endpoints/" + eps[0]["id"], json={"endpoint": {"url": url}})

    # What the keystone charm creates for our charm (identity-credentials).
    dom = ensure(ks, "domains", "domain", {"name": "service_domain"},
                 {"name": "service_domain", "enabled": True, "description": "Created by Juju (simulated)"})
    proj = ensure(ks, "projects", "project", {"name": "services", "domain_id": dom["id"]},
                  {"name": "services", "domain_id": dom["id"], "enabled": True})
    pwfile = os.path.join(MC, "nova_live_migration.password")
    if not os.path.exists(pwfile):
        with open(pwfile, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(secrets.token_urlsafe(24))
    password = open(pwfile).read().strip()
    ensure_user(ks, "nova_live_migration", dom["id"], password, proj["id"], [admin_role])

    kport = str(E["NLM_CLOUD_KEYSTONE_PORT"])
    rel = {
        "auth_host": "127.0.0.1", "auth_port": kport, "auth_protocol": "http",
        "credentials_host": "127.0.0.1", "credentials_port": kport, "credentials_protocol": "http",
        "credentials_username": "nova_live_migration", "credentials_password": password,
        "credentials_project": "services", "credentials_project_id": proj["id"],
        "api_version": "3", "region": "RegionOne", "domain": "service_domain",
        "credentials_user_domain_name": "service_domain", "credentials_user_domain_id": dom["id"],
        "credentials_project_domain_name": "service_domain", "credentials_project_domain_id": dom["id"],
        "private-address": "127.0.0.1",
    }
    write(os.path.join(MC, "relation.json"), json.dumps(rel, indent=2, sort_keys=True) + "\n", 0o600)
    rc = {
        "OS_AUTH_URL": KS, "OS_USERNAME": "admin", "OS_PASSWORD": ADMIN_PW, "OS_PROJECT_NAME": "admin",
        "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_REGION_NAME": "RegionOne", "OS_IDENTITY_API_VERSION": "3",
    }
    write(os.path.join(MC, "adminrc"), "".join("export %s=%s\n" % kv for kv in rc.items()), 0o600)
    log("keystone seeded (domain %s, project services %s)" % (default["name"] and dom["id"], proj["id"]))


def write(path, text, mode):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        os.fchmod(f.fileno(), mode)
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- nova
def nova():
    return Api(NOVA, token(), MV)


def seed_nova():
    n = nova()
    have = {f["name"] for f in n.get("/flavors")["flavors"]}
    for name, ram in (("m1.tiny", 64), ("m1.small", 128)):
        if name not in have:
            n.req("POST", "/flavors", json={"flavor": {"name": name, "ram": ram, "vcpus": 1, "disk": 1}})
    log("flavors m1.tiny, m1.small present")
    # Flavors whose extra specs the migratability pre-checks read (the fake
    # driver reports the traits, VGPU inventory and PCI device they need).
    for name, specs in SPECIAL_FLAVORS:
        if name not in have:
            f = n.req("POST", "/flavors", json={"flavor": {"name": name, "ram": 64, "vcpus": 1, "disk": 1}})
            n.req("POST", "/flavors/%s/os-extra_specs" % f["flavor"]["id"], json={"extra_specs": specs})
    log("flavors %s present" % ", ".join(name for name, _ in SPECIAL_FLAVORS))


SPECIAL_FLAVORS = (
    ("nlm.vtpm", {"hw:tpm_version": "2.0", "hw:tpm_model": "tpm-tis"}),
    ("nlm.vtpm-host", {"hw:tpm_version": "2.0", "hw:tpm_model": "tpm-tis", "hw:tpm_secret_security": "host"}),
    ("nlm.vgpu", {"resources:VGPU": "1"}),
    ("nlm.pci", {"pci_passthrough:alias": "nlm-pci:1"}),
)


def parse_ts(s):
    if not s:
        return 0.0
    s = s.replace("Z", "")
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in s else "%Y-%m-%dT%H:%M:%S"
    return datetime.datetime.strptime(s, fmt).replace(tzinfo=datetime.timezone.utc).timestamp()


def computes_ready(n, since):
    svcs = n.get("/os-services", params={"binary": "nova-compute"})["services"]
    ok = {s["host"] for s in svcs if s["state"] == "up" and parse_ts(s["updated_at"]) >= since - 1}
    hyps = n.get("/os-hypervisors")["hypervisors"]
    hv = {h["hypervisor_hostname"] for h in hyps if h.get("state") == "up"}
    missing = [h for h in HOSTS if h not in ok or h + NODE_SUFFIX not in hv]
    return missing


def wait_computes(since, timeout):
    deadline = time.time() + timeout
    missing = HOSTS
    while time.time() < deadline:
        try:
            missing = computes_ready(nova(), since)
            if not missing:
                log("computes up: %s" % " ".join(HOSTS))
                return 0
        except Exception as e:  # noqa: BLE001 - keep polling while services start
            missing = [str(e)[:200]]
        time.sleep(1)
    log("timed out waiting for computes: %s" % missing)
    return 1


def healthy():
    try:
        n = nova()
        return 1 if computes_ready(n, 0) else 0
    except Exception as e:  # noqa: BLE001
        log("not healthy: %s" % str(e)[:200])
        return 1


def reset(timeout=120):
    n = nova()
    for s in n.get("/os-services", params={"binary": "nova-compute"})["services"]:
        if s["status"] != "enabled":
            n.req("PUT", "/os-services/" + s["id"], json={"status": "enabled"})
    servers = n.get("/servers", params={"all_tenants": "1"})["servers"]
    for s in servers:
        for m in n.get("/servers/%s/migrations" % s["id"], ok=(200, 404)).get("migrations", []) or []:
            n.req("DELETE", "/servers/%s/migrations/%s" % (s["id"], m["id"]), ok=(202, 400, 404, 409))
    deadline = time.time() + timeout
    while time.time() < deadline:
        servers = n.get("/servers", params={"all_tenants": "1"})["servers"]
        if not servers:
            log("reset: no servers, all compute services enabled")
            return 0
        for s in servers:
            n.req("DELETE", "/servers/" + s["id"], ok=(204, 404, 409))
        time.sleep(1)
    log("reset: servers left after %ss: %s" % (timeout, [s["id"] for s in servers]))
    return 1


def forget_hosts(hosts):
    """Removes the nova-compute services of these (stopped) hosts from Nova:
    their compute nodes and Placement providers go with them."""
    n = nova()
    for s in n.get("/os-services", params={"binary": "nova-compute"})["services"]:
        if s["host"] in hosts:
            n.req("DELETE", "/os-services/" + s["id"], ok=(204, 404))
            log("forgot compute %s" % s["host"])
    return 0


def masakari_catalog(url):
    """The instance-ha service and its endpoints at URL; none when URL is empty."""
    ks = Api(KS, token())
    svcs = ks.get("/services", params={"type": "instance-ha"})["services"]
    if not url:
        for svc in svcs:
            for e in ks.get("/endpoints", params={"service_id": svc["id"]})["endpoints"]:
                ks.req("DELETE", "/endpoints/" + e["id"])
            ks.req("DELETE", "/services/" + svc["id"])
            log("instance-ha (Masakari) removed from the catalog")
        return 0
    svc = ensure(ks, "services", "service", {"type": "instance-ha"},
                 {"type": "instance-ha", "name": "masakari", "enabled": True})
    for iface in ("public", "internal", "admin"):
        eps = ks.get("/endpoints", params={"service_id": svc["id"], "interface": iface})["endpoints"]
        if not eps:
            ks.req("POST", "/endpoints", json={"endpoint": {
                "service_id": svc["id"], "interface": iface, "url": url,
                "region_id": "RegionOne", "enabled": True}})
        elif eps[0]["url"] != url:
            ks.req("PATCH", "/endpoints/" + eps[0]["id"], json={"endpoint": {"url": url}})
    log("instance-ha (Masakari stand-in) in the catalog: %s" % url)
    return 0


def main():
    cmd = sys.argv[1]
    if cmd == "masakari-catalog":
        return masakari_catalog(sys.argv[2])
    if cmd == "forget-hosts":
        return forget_hosts(sys.argv[2:])
    if cmd == "seed-keystone":
        seed_keystone()
        return 0
    if cmd == "seed-nova":
        seed_nova()
        return 0
    if cmd == "wait-computes":
        return wait_computes(float(sys.argv[2]), float(sys.argv[3]))
    if cmd == "healthy":
        return healthy()
    if cmd == "reset":
        return reset()
    raise SystemExit("unknown subcommand " + cmd)


if __name__ == "__main__":
    sys.exit(main())
