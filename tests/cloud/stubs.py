"""Glance and Neutron stand-ins for the local test cloud (stdlib only).

Serves only the calls Nova makes with ``"networks": "none"`` servers, and
Neutron ports made with ``POST /v2.0/ports`` (listed with Neutron's filters
and ``fields``, updated, deleted) so a test can give a server a port with a
chosen ``binding:vnic_type``; every other request is answered 404 and logged
with the word UNHANDLED.

With ``NLM_STUB_IMAGES`` naming a JSON list of images (the libvirt mode of
tests/cloud/cloud writes ``$NLM_CLOUD_DIR/guest/images.json``), Glance also
serves those images' real bytes (``GET /v2/images/<id>/file``) with their
size, md5 ``checksum`` and sha512 ``os_hash_value``; each entry is
``{"id", "name", "file", "disk_format", "container_format", "properties"}``
(``file`` relative to the list's directory, ``properties`` strings such as
``kernel_id``, ``ramdisk_id``, ``os_command_line``). The schema marks those
properties ``"is_base": false`` (Nova keeps only non-base properties of an
image: a base ``kernel_id`` would be dropped and the guest would boot from an
empty disk).

Glance also takes ``POST /v2/images`` (any image record with properties at
the top level, e.g. ``{"name": "x", "hw_tpm_version": "2.0"}``), made
``active`` at once without bytes (the fake virt driver never downloads an
image), listed and read like the others and removed by ``DELETE``, so a test
can boot from an image with the properties it needs.

A Manila (shared-file-system v2) stand-in on the third port (class
``Manila``): what Nova's ``nova/share/manila.py`` asks through openstacksdk
when a share is attached to a server, started with it, detached or the
server deleted (share, export locations, access rules allow/list/deny), and
``POST /v2/shares`` for a test to make a share.

With a fourth port, also a Masakari (instance-ha) stand-in (class ``Masakari``).

Usage: stubs.py GLANCE_PORT NEUTRON_PORT MANILA_PORT [MASAKARI_PORT]
"""

import hashlib
import json
import os
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

IMAGE_ID = "3b6a1c2e-9d4f-4e8a-8c1b-6f0d2a7e5c01"
IMAGE_NAME = "nlm-test-image"


# id -> (record without base-dependent links, path of the bytes)
REAL = {}
# properties the real images carry (non-base: see the module doc)
EXTRA_PROPS = ("kernel_id", "ramdisk_id", "os_command_line", "nlm_guest")


def load_real_images(listing):
    """Reads the image list, hashes every file (md5 and sha512)."""
    root = os.path.dirname(os.path.abspath(listing))
    with open(listing) as f:
        entries = json.load(f)
    for e in entries:
        path = os.path.join(root, e["file"])
        md5, sha = hashlib.md5(), hashlib.sha512()
        size = 0
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                md5.update(chunk)
                sha.update(chunk)
                size += len(chunk)
        rec = {
            "id": e["id"], "name": e["name"], "status": "active", "visibility": "public",
            "protected": False, "os_hidden": False,
            "container_format": e["container_format"], "disk_format": e["disk_format"],
            "size": size, "virtual_size": size, "min_disk": 0, "min_ram": 0,
            "checksum": md5.hexdigest(), "os_hash_algo": "sha512", "os_hash_value": sha.hexdigest(),
            "owner": None, "tags": [],
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "self": "/v2/images/" + e["id"], "file": "/v2/images/%s/file" % e["id"],
            "schema": "/v2/schemas/image",
        }
        for k, v in (e.get("properties") or {}).items():
            rec[k] = str(v)
        REAL[e["id"]] = (rec, path)


def image(base):
    return {
        "id": IMAGE_ID,
        "name": IMAGE_NAME,
        "status": "active",
        "visibility": "public",
        "protected": False,
        "os_hidden": False,
        "container_format": "bare",
        "disk_format": "raw",
        "size": 1048576,
        "virtual_size": 1048576,
        "min_disk": 0,
        "min_ram": 0,
        "checksum": "b6d81b360a5672d80c27430f39153e2c",
        "os_hash_algo": "sha512",
        "os_hash_value": "0" * 128,
        "owner": None,
        "tags": [],
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "self": "/v2/images/" + IMAGE_ID,
        "file": "/v2/images/%s/file" % IMAGE_ID,
        "schema": "/v2/schemas/image",
    }


def image_schema():
    s = {"type": ["null", "string"]}
    props = {
        k: dict(s)
        for k in (
            "id", "name", "status", "visibility", "container_format", "disk_format",
            "checksum", "os_hash_algo", "os_hash_value", "owner", "created_at",
            "updated_at", "self", "file", "schema", "direct_url",
        )
    }
    for k in ("size", "virtual_size", "min_disk", "min_ram"):
        props[k] = {"type": ["null", "integer"]}
    props["protected"] = {"type": "boolean"}
    props["os_hidden"] = {"type": "boolean"}
    props["tags"] = {"type": "array", "items": {"type": "string"}}
    props["locations"] = {"type": "array"}
    for k in EXTRA_PROPS:
        props[k] = {"type": "string", "is_base": False}
    return {
        "name": "image",
        "properties": props,
        "additionalProperties": {"type": "string"},
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    service = "?"

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s %s\n" % (self.log_date_time_string(), self.service, fmt % args))
        sys.stdout.flush()

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def unhandled(self):
        sys.stdout.write("UNHANDLED %s %s %s\n" % (self.service, self.command, self.path))
        sys.stdout.flush()
        self.reply(404, {"error": "not served by the nlm stub", "path": self.path})

    def drain(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)

    def do_POST(self):
        self.drain()
        self.unhandled()

    do_PUT = do_PATCH = do_DELETE = do_POST

    def do_HEAD(self):
        self.do_GET()


# Images made through POST /v2/images (id -> record): active at once, no bytes.
CREATED = {}
CREATED_LOCK = threading.Lock()


def read_json(handler):
    n = int(handler.headers.get("Content-Length") or 0)
    try:
        return json.loads(handler.rfile.read(n) or b"{}")
    except ValueError:
        return None


class Glance(Handler):
    service = "glance"

    def do_POST(self):
        if urlsplit(self.path).path.rstrip("/") != "/v2/images":
            self.drain()
            return self.unhandled()
        b = read_json(self)
        if not isinstance(b, dict):
            return self.reply(400, {"error": "body must be an image object"})
        base = "http://%s:%d" % self.server.server_address[:2]
        rec = image(base)
        rec.update({k: v for k, v in b.items() if k not in ("status", "self", "file", "schema")})
        rec["id"] = b.get("id") or str(uuid.uuid4())
        rec["self"], rec["file"] = "/v2/images/" + rec["id"], "/v2/images/%s/file" % rec["id"]
        with CREATED_LOCK:
            CREATED[rec["id"]] = rec
        return self.reply(201, rec)

    def do_DELETE(self):
        iid = urlsplit(self.path).path.rstrip("/").rsplit("/", 1)[-1]
        with CREATED_LOCK:
            gone = CREATED.pop(iid, None)
        if gone is None:
            return self.reply(404, {"error": "image %s not found" % iid})
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        url = urlsplit(self.path)
        path = url.path.rstrip("/")
        base = "http://%s:%d" % self.server.server_address[:2]
        if path in ("", "/versions"):
            return self.reply(300, {"versions": [{
                "id": "v2.16", "status": "CURRENT",
                "links": [{"rel": "self", "href": base + "/v2/"}],
            }]})
        if path == "/v2/schemas/image":
            return self.reply(200, image_schema())
        if path == "/v2/images":
            with CREATED_LOCK:
                made = [dict(rec) for rec in CREATED.values()]
            images = [image(base)] + [dict(rec) for rec, _ in REAL.values()] + made
            return self.reply(200, {"images": images, "schema": "/v2/schemas/images",
                                    "first": "/v2/images"})
        if path == "/v2/images/" + IMAGE_ID:
            return self.reply(200, image(base))
        parts = path.split("/")
        if len(parts) == 4 and parts[1:3] == ["v2", "images"]:
            with CREATED_LOCK:
                made = CREATED.get(parts[3])
            if made is not None:
                return self.reply(200, dict(made))
        if len(parts) >= 4 and parts[1:3] == ["v2", "images"] and parts[3] in REAL:
            rec, file = REAL[parts[3]]
            if len(parts) == 4:
                return self.reply(200, dict(rec))
            if len(parts) == 5 and parts[4] == "file":
                return self.send_file(rec, file)
        return self.unhandled()

    def send_file(self, rec, file):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(rec["size"]))
        self.send_header("Content-MD5", rec["checksum"])
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 16), b""):
                self.wfile.write(chunk)


# Ports made through POST /v2.0/ports (id -> port), for the pre-checks that
# read binding:vnic_type. Nova does not plug them (its servers here have
# "networks": "none"); they exist so a client listing a server's ports sees
# them as Neutron would show them.
PORTS = {}
PORTS_LOCK = threading.Lock()
PORT_DEFAULTS = {"name": "", "network_id": "", "device_owner": "compute:nova", "admin_state_up": True,
                 "status": "ACTIVE", "binding:vnic_type": "normal", "binding:host_id": "",
                 "binding:profile": {}, "fixed_ips": [], "mac_address": "fa:16:3e:00:00:01"}


def port_matches(port, query):
    """Neutron's list filters: every key given, any of its values (fields aside)."""
    return all(str(port.get(k)) in vals for k, vals in query.items() if k != "fields")


def port_view(port, fields):
    return {k: v for k, v in port.items() if k in fields} if fields else dict(port)


class Neutron(Handler):
    service = "neutron"

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            return None

    def do_POST(self):
        if urlsplit(self.path).path.rstrip("/") != "/v2.0/ports":
            self.drain()
            return self.unhandled()
        b = self.body()
        if not isinstance(b, dict) or not isinstance(b.get("port"), dict):
            return self.reply(400, {"NeutronError": {"message": "body must be {\"port\": {...}}"}})
        port = dict(PORT_DEFAULTS)
        port.update(b["port"])
        port["id"] = port.get("id") or str(uuid.uuid4())
        with PORTS_LOCK:
            PORTS[port["id"]] = port
        return self.reply(201, {"port": port})

    def do_PUT(self):
        pid = urlsplit(self.path).path.rstrip("/").rsplit("/", 1)[-1]
        b = self.body() or {}
        with PORTS_LOCK:
            if pid not in PORTS:
                return self.reply(404, {"NeutronError": {"message": "Port %s could not be found." % pid}})
            PORTS[pid].update(b.get("port") or {})
            return self.reply(200, {"port": dict(PORTS[pid])})

    def do_DELETE(self):
        pid = urlsplit(self.path).path.rstrip("/").rsplit("/", 1)[-1]
        with PORTS_LOCK:
            gone = PORTS.pop(pid, None)
        if gone is None:
            return self.reply(404, {"NeutronError": {"message": "Port %s could not be found." % pid}})
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        url = urlsplit(self.path)
        path = url.path.rstrip("/")
        base = "http://%s:%d" % self.server.server_address[:2]
        if path == "":
            return self.reply(200, {"versions": [{
                "id": "v2.0", "status": "CURRENT",
                "links": [{"rel": "self", "href": base + "/v2.0/"}],
            }]})
        if path == "/v2.0/ports":
            query = parse_qs(url.query)
            with PORTS_LOCK:
                ports = [port_view(p, query.get("fields")) for p in PORTS.values() if port_matches(p, query)]
            return self.reply(200, {"ports": ports})
        if path.startswith("/v2.0/ports/"):
            with PORTS_LOCK:
                port = PORTS.get(path.rsplit("/", 1)[-1])
            return self.reply(200, {"port": port}) if port else self.reply(404, {"NeutronError": {"message": "not found"}})
        coll = {
            "/v2.0/extensions": "extensions",
            "/v2.0/networks": "networks",
                        "/v2.0/security-groups": "security_groups",
            "/v2.0/floatingips": "floatingips",
            "/v2.0/subnets": "subnets",
        }.get(path)
        if coll is not None:
            return self.reply(200, {coll: []})
        return self.unhandled()


class Manila(Handler):
    """Manila (shared-file-system API v2) stand-in: shares made by a test
    with ``POST /v2/shares`` (``{"share": {"name", "share_proto", "size"}}``,
    ``available`` at once, one NFS export location ``127.0.0.1:/nlm/<id>``),
    and what Nova calls through openstacksdk (``nova/share/manila.py``):
    ``GET /v2/shares/<id>``, ``GET /v2/shares/<id>/export_locations``,
    ``GET /v2/share-access-rules?share_id=``, ``POST
    /v2/shares/<id>/action`` with ``allow_access`` (the rule is ``active``
    at once, so ``has_access`` holds on the first poll) or ``deny_access``;
    also ``GET /v2/shares``, ``DELETE /v2/shares/<id>``. Paths are served
    with or without a project id after ``/v2``. A request without a token
    is refused (401); tokens are not validated. State is in memory."""

    service = "manila"
    lock = threading.Lock()
    shares = {}  # id -> share
    exports = {}  # share id -> its export location
    rules = {}  # access id -> rule (with share_id)

    def version(self, base):
        return {"id": "v2.0", "status": "CURRENT", "version": "2.92", "min_version": "2.0",
                "updated": "2015-08-27T11:33:21Z",
                "links": [{"rel": "self", "href": base + "/v2/"}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.share+json;version=1"}]}

    def route(self):
        """The path's parts below /v2 (an optional project id dropped), or None."""
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if not parts or parts[0] != "v2":
            return None
        parts = parts[1:]
        if parts and parts[0] not in ("shares", "share-access-rules"):
            parts = parts[1:]  # project id
        return parts

    def authorized(self):
        if self.headers.get("X-Auth-Token"):
            return True
        self.reply(401, {"error": {"code": 401, "title": "Unauthorized"}})
        return False

    def not_found(self, what):
        return self.reply(404, {"itemNotFound": {"code": 404, "message": "%s could not be found." % what}})

    def do_GET(self):
        base = "http://%s:%d" % self.server.server_address[:2]
        r = self.route()
        if r is None or r == []:
            return self.reply(300 if r is None else 200, {"versions": [self.version(base)]})
        if not self.authorized():
            return
        with self.lock:
            if r == ["shares"] or r == ["shares", "detail"]:
                return self.reply(200, {"shares": list(self.shares.values())})
            if r[0] == "shares" and len(r) >= 2:
                share = self.shares.get(r[1])
                if share is None:
                    return self.not_found("Share %s" % r[1])
                if len(r) == 2:
                    return self.reply(200, {"share": share})
                if r[2:] == ["export_locations"]:
                    return self.reply(200, {"export_locations": [self.exports[r[1]]]})
            if r == ["share-access-rules"]:
                sid = parse_qs(urlsplit(self.path).query).get("share_id", [""])[0]
                if sid not in self.shares:
                    return self.not_found("Share %s" % sid)
                mine = [v for v in self.rules.values() if v["share_id"] == sid]
                return self.reply(200, {"access_list": mine})
        return self.unhandled()

    def do_POST(self):
        r = self.route()
        b = read_json(self)
        if r is None or not isinstance(b, dict):
            return self.unhandled()
        if not self.authorized():
            return
        if r == ["shares"]:
            return self.create_share(b.get("share") or {})
        if len(r) == 3 and r[0] == "shares" and r[2] == "action":
            with self.lock:
                if r[1] not in self.shares:
                    return self.not_found("Share %s" % r[1])
                if "allow_access" in b:
                    return self.allow(r[1], b["allow_access"])
                if "deny_access" in b:
                    gone = self.rules.pop((b["deny_access"] or {}).get("access_id"), None)
                    if gone is None:
                        return self.not_found("Access rule")
                    sys.stdout.write("manila: deny %s on %s\n" % (gone["access_to"], r[1]))
                    sys.stdout.flush()
                    return self.reply(202, {})
        return self.unhandled()

    def create_share(self, req):
        sid = req.get("id") or str(uuid.uuid4())
        share = {"id": sid, "name": req.get("name"), "description": req.get("description"),
                 "size": int(req.get("size") or 1), "share_proto": req.get("share_proto") or "NFS",
                 "status": "available", "availability_zone": "nova", "project_id": req.get("project_id", ""),
                 "snapshot_id": None, "share_network_id": None, "share_type": None,
                 "share_type_name": None, "is_public": False, "metadata": {},
                 "created_at": "2026-01-01T00:00:00.000000", "links": []}
        export = {"id": str(uuid.uuid4()), "path": "127.0.0.1:/nlm/%s" % sid, "preferred": True,
                  "is_admin_only": False, "share_instance_id": sid}
        with self.lock:
            self.shares[sid], self.exports[sid] = share, export
        return self.reply(201, {"share": share})

    def allow(self, sid, req):
        for v in self.rules.values():
            if v["share_id"] == sid and (v["access_type"], v["access_to"]) == (req.get("access_type"), req.get("access_to")):
                return self.reply(400, {"badRequest": {"code": 400, "message": "Share access %s:%s exists." % (v["access_type"], v["access_to"])}})
        rule = {"id": str(uuid.uuid4()), "share_id": sid, "access_type": req.get("access_type"),
                "access_to": req.get("access_to"), "access_level": req.get("access_level", "rw"),
                "access_key": None, "state": "active", "metadata": {},
                "created_at": "2026-01-01T00:00:00.000000", "updated_at": None}
        self.rules[rule["id"]] = rule
        sys.stdout.write("manila: allow %s:%s on %s\n" % (rule["access_type"], rule["access_to"], sid))
        sys.stdout.flush()
        return self.reply(200, {"access": rule})

    def do_DELETE(self):
        r = self.route()
        if r is None or len(r) != 2 or r[0] != "shares":
            return self.unhandled()
        if not self.authorized():
            return
        with self.lock:
            if self.shares.pop(r[1], None) is None:
                return self.not_found("Share %s" % r[1])
            self.exports.pop(r[1], None)
            for k in [k for k, v in self.rules.items() if v["share_id"] == r[1]]:
                del self.rules[k]
        return self.reply(202, {})


class Masakari(Handler):
    """Masakari (instance-ha) API v1 stand-in: failover segments and their
    hosts, in memory, the shapes of masakari's api-ref (segments, hosts with
    ``on_maintenance``). One segment, ``nlm-segment``, holds every compute
    host named in NLM_STUB_MASAKARI_HOSTS at start. Paths are served with or
    without a project id after ``/v1`` (the catalog URL has one). A request
    without a token is refused (401); tokens are not validated."""

    service = "masakari"
    lock = threading.Lock()
    segments = {}  # uuid -> segment
    hosts = {}  # uuid -> host (with failover_segment_id)

    @classmethod
    def seed(cls, names):
        seg = {"uuid": "6d3c2a71-0c4e-4b8e-9a55-5b1f0e7c1a01", "id": 1, "name": "nlm-segment",
               "description": None, "recovery_method": "auto", "service_type": "COMPUTE",
               "enabled": True, "deleted": False, "created_at": "2026-01-01T00:00:00.000000",
               "updated_at": None, "deleted_at": None}
        cls.segments[seg["uuid"]] = seg
        for i, name in enumerate(names, 1):
            uuid = "6d3c2a71-0c4e-4b8e-9a55-5b1f0e7c2%03d" % i
            cls.hosts[uuid] = {"uuid": uuid, "id": i, "name": name, "type": "COMPUTE_HOST",
                               "control_attributes": "SSH", "reserved": False, "on_maintenance": False,
                               "deleted": False, "failover_segment_id": seg["uuid"],
                               "created_at": "2026-01-01T00:00:00.000000", "updated_at": None,
                               "deleted_at": None}

    def route(self):
        """['segments', …] below /v1 (and an optional project id), or None."""
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if not parts or parts[0] != "v1":
            return None
        parts = parts[1:]
        if parts and parts[0] != "segments":
            parts = parts[1:]  # project id
        return parts if parts and parts[0] == "segments" else None

    def host_view(self, h):
        v = dict(h)
        v["failover_segment"] = dict(self.segments[h["failover_segment_id"]])
        return v

    def authorized(self):
        if self.headers.get("X-Auth-Token"):
            return True
        self.reply(401, {"error": {"code": 401, "title": "Unauthorized"}})
        return False

    def do_GET(self):
        if urlsplit(self.path).path.rstrip("/") == "":
            return self.reply(200, {"versions": [{"id": "v1.0", "status": "CURRENT"}]})
        r = self.route()
        if r is None:
            return self.unhandled()
        if not self.authorized():
            return
        with self.lock:
            if len(r) == 1:
                return self.reply(200, {"segments": list(self.segments.values())})
            seg = self.segments.get(r[1])
            if seg is None:
                return self.reply(404, {"itemNotFound": {"code": 404, "message": "No failover segment with id %s." % r[1]}})
            mine = [h for h in self.hosts.values() if h["failover_segment_id"] == seg["uuid"]]
            if len(r) == 2:
                return self.reply(200, {"segment": seg})
            if len(r) == 3 and r[2] == "hosts":
                return self.reply(200, {"hosts": [self.host_view(h) for h in mine]})
            if len(r) == 4 and r[2] == "hosts":
                h = next((h for h in mine if h["uuid"] == r[3]), None)
                if h is not None:
                    return self.reply(200, {"host": self.host_view(h)})
                return self.reply(404, {"itemNotFound": {"code": 404, "message": "Host %s could not be found." % r[3]}})
        return self.unhandled()

    def do_PUT(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        r = self.route()
        if r is None or len(r) != 4 or r[2] != "hosts":
            return self.unhandled()
        if not self.authorized():
            return
        try:
            upd = json.loads(body or b"{}")["host"]
        except (ValueError, KeyError, TypeError):
            return self.reply(400, {"badRequest": {"code": 400, "message": "Invalid input: 'host' is a required property"}})
        with self.lock:
            h = self.hosts.get(r[3])
            if h is None or h["failover_segment_id"] != r[1]:
                return self.reply(404, {"itemNotFound": {"code": 404, "message": "Host %s could not be found." % r[3]}})
            for k in ("on_maintenance", "reserved"):
                if k in upd:
                    v = upd[k]
                    h[k] = v if isinstance(v, bool) else str(v).lower() in ("true", "1", "yes")
            h["updated_at"] = "2026-01-01T00:00:01.000000"
            sys.stdout.write("masakari: host %s on_maintenance=%s\n" % (h["name"], h["on_maintenance"]))
            sys.stdout.flush()
            return self.reply(200, {"host": self.host_view(h)})


def main():
    glance_port, neutron_port, manila_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    if os.environ.get("NLM_STUB_IMAGES"):
        load_real_images(os.environ["NLM_STUB_IMAGES"])
    servers = [ThreadingHTTPServer(("127.0.0.1", glance_port), Glance),
               ThreadingHTTPServer(("127.0.0.1", neutron_port), Neutron),
               ThreadingHTTPServer(("127.0.0.1", manila_port), Manila)]
    if len(sys.argv) > 4:  # the Masakari stand-in (NLM_CLOUD_MASAKARI)
        Masakari.seed(os.environ.get("NLM_STUB_MASAKARI_HOSTS", "").split())
        servers.append(ThreadingHTTPServer(("127.0.0.1", int(sys.argv[4])), Masakari))
    for s in servers:
        s.daemon_threads = True
    for s in servers[:-1]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("stubs: glance on %d, neutron on %d, manila on %d%s, images %s" % (
        glance_port, neutron_port, manila_port,
        ", masakari on %s" % sys.argv[4] if len(sys.argv) > 4 else "",
        " ".join([IMAGE_ID] + sorted(REAL))), flush=True)
    servers[-1].serve_forever()


if __name__ == "__main__":
    main()
