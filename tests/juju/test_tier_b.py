"""Tier B: a Charmed OpenStack with two nova-compute units (not run in CI).

Set NLM_JUJU_OPENSTACK_MODEL to a model that has `nova-compute` (two units,
live migration working between them), `keystone`, and instances on the
first unit's node; the suite deploys the packed charm into it, drains the
first node and puts everything back. See tests/juju/README.md.
"""

from __future__ import annotations

import json
import os
import re
import time

import jubilant
import pytest

from conftest import APP

MODEL = os.environ.get("NLM_JUJU_OPENSTACK_MODEL")
pytestmark = [
    pytest.mark.tier_b,
    pytest.mark.skipif(not MODEL, reason="NLM_JUJU_OPENSTACK_MODEL is not set (Tier B needs Charmed OpenStack)"),
]


@pytest.fixture(scope="module")
def juju(charm):
    juju = jubilant.Juju(model=MODEL)
    juju.wait_timeout = 30 * 60
    computes = sorted(juju.status().apps["nova-compute"].units)
    assert len(computes) >= 2, f"Tier B needs two nova-compute units, the model has {computes}"
    if APP not in juju.status().apps:
        juju.deploy(charm, APP)
        juju.integrate(f"{APP}:juju-info", "nova-compute:juju-info")
        juju.integrate(f"{APP}:identity-credentials", "keystone:identity-credentials")
    juju.wait(lambda s: jubilant.all_active(s, APP), error=jubilant.any_error)
    yield juju
    # Leave the nodes enabled whatever happened.
    for u in subordinates(juju):
        try:
            juju.run(u, "enable", {"force": True}, wait=600)
        except jubilant.TaskError:
            pass


def subordinates(juju) -> list[str]:
    out = []
    for name, u in sorted(juju.status().apps["nova-compute"].units.items()):
        out += [s for s in u.subordinates if s.startswith(APP + "/")]
    return out


def principal_of(juju, sub: str) -> str:
    for name, u in juju.status().apps["nova-compute"].units.items():
        if sub in u.subordinates:
            return name
    raise AssertionError(sub)


def test_dry_run_plans_the_node(juju):
    u = subordinates(juju)[0]
    task = juju.run(u, "evacuate", {"dry-run": True}, wait=600)
    report = json.loads(task.results["report"])
    assert report["dry_run"] is True
    assert report["instances"], "Tier B needs instances on the first node"


def test_evacuate_and_enable(juju):
    u = subordinates(juju)[0]
    task = juju.run(u, "evacuate", wait=3 * 3600)
    assert task.results["summary"].startswith("evacuate "), task
    report = json.loads(task.results["report"])
    assert report["counts"]["failed"] == 0, report
    assert all(i["result"] in ("migrated", "cold_migrated", "skipped") for i in report["instances"]), report
    task = juju.run(u, "enable", wait=600)
    assert task.results["summary"].startswith("enabled"), task


def test_cli_abort_stops_a_running_evacuation(juju):
    u = subordinates(juju)[-1]
    principal = principal_of(juju, u)
    out = juju.cli("run", u, "evacuate", "--background")
    task_id = re.search(r"task (\d+)", out).group(1)
    # Wait for a migration in flight (the CLI status names it).
    deadline = time.time() + 600
    while time.time() < deadline:
        st = juju.exec("nova-live-migration status --json", unit=principal, wait=300)
        if json.loads(st.stdout).get("migrations"):
            break
        time.sleep(5)
    task = juju.exec("nova-live-migration abort", unit=principal, wait=600)
    assert "took the request" in task.stdout, task
    deadline = time.time() + 1200
    while time.time() < deadline:
        show = json.loads(juju.cli("show-task", task_id, "--format", "json"))
        status = show.get("status") or next(iter(show.values()))["status"]
        if status in ("completed", "failed"):
            break
        time.sleep(5)
    assert status == "failed", show  # ended "aborted …" by action-fail
    juju.run(u, "enable", {"force": True}, wait=600)
