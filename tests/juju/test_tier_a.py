"""Tier A: any controller (e.g. LXD), no OpenStack.

One temporary model per base: `ubuntu` (the principal stand-in) on Ubuntu
22.04 or 24.04, the packed charm as its subordinate over juju-info, and for
the long-action test a fake keystone (tests/juju/fake_keystone) whose
endpoint never answers. Run with tests/juju/run (see the README).
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import jubilant
import pytest

from conftest import APP

pytestmark = pytest.mark.tier_a

BASES = ["ubuntu@22.04", "ubuntu@24.04"]


@pytest.fixture(scope="module", params=BASES)
def base(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def juju(base, charm):
    with jubilant.temp_model() as juju:
        juju.wait_timeout = 15 * 60
        juju.deploy("ubuntu", base=base)
        juju.deploy(charm, APP, base=base)
        juju.integrate(f"{APP}:juju-info", "ubuntu:juju-info")
        juju.wait(lambda s: jubilant.all_blocked(s, APP), error=jubilant.any_error)
        yield juju


def unit(juju) -> str:
    subs = juju.status().apps["ubuntu"].units["ubuntu/0"].subordinates
    return next(name for name in subs if name.startswith(APP + "/"))


def machine(juju) -> str:
    return juju.status().apps["ubuntu"].units["ubuntu/0"].machine


def juju_run_cli(juju, *args: str) -> subprocess.CompletedProcess:
    """`juju run` exactly as an operator types it (k=v, parsed by the CLI)."""
    return subprocess.run(
        ["juju", "run", "--model", juju.model, "--format", "json", "--wait", "120s", *args],
        capture_output=True,
        text=True,
    )


def test_blocked_naming_identity_credentials(juju):
    st = juju.status().apps["ubuntu"].units["ubuntu/0"].subordinates[unit(juju)]
    assert st.workload_status.current == "blocked"
    assert "identity-credentials" in st.workload_status.message


def test_action_schemas(juju):
    out = json.loads(juju.cli("actions", APP, "--schema", "--format", "json"))
    assert set(out) == {"evacuate", "migrate-vm", "abort", "force-complete", "enable", "status"}
    bm = out["evacuate"]["properties"]["block-migration"]
    assert bm["type"] == ["string", "boolean"]
    assert out["migrate-vm"]["required"] == ["vm"]
    assert out["evacuate"]["additionalProperties"] is False


@pytest.mark.parametrize(
    "args",
    [
        ["evacuate", "dry-run=true"],
        ["evacuate", "block-migration=true"],
        ["evacuate", "block-migration=false"],
        ["evacuate", "block-migration=auto"],
        ["evacuate", "--string-args", "block-migration=true"],
        ["evacuate", "max-concurrent=2"],
        ["evacuate", "exclude=a,b"],
        ["evacuate", "target-host=node4.maas"],
        ["migrate-vm", "vm=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"],
        ["migrate-vm", "vm=12345"],
        ["abort", "vm=12345"],
    ],
)
def test_parameter_forms_pass_the_controller(juju, args):
    # Without credentials the charm fails the action itself, after the
    # controller has accepted the parameters: never a validation error.
    p = juju_run_cli(juju, unit(juju), *args)
    text = p.stdout + p.stderr
    assert "validation failed" not in text, text
    task = next(iter(json.loads(p.stdout).values()))
    assert task["status"] == "failed", task
    assert "identity-credentials" in task["message"], task


def test_bad_parameter_is_refused_by_the_controller(juju):
    p = juju_run_cli(juju, unit(juju), "evacuate", "max-concurrent=0")
    assert p.returncode != 0
    assert "validation failed: (root).max-concurrent : must be greater than or equal to 1" in p.stderr


def test_evacuate_fails_cleanly_with_a_summary(juju):
    with pytest.raises(jubilant.TaskError) as e:
        juju.run(unit(juju), "evacuate", {"dry-run": True}, wait=120)
    task = e.value.task
    assert task.status == "failed"
    assert task.results.get("summary"), task
    assert "identity-credentials" in task.message


def test_bad_config_blocks_naming_the_option(juju):
    juju.config(APP, {"poll-interval": -1})
    try:
        juju.wait(
            lambda s: "poll-interval" in s.apps["ubuntu"].units["ubuntu/0"].subordinates[unit(juju)].workload_status.message
        )
        st = juju.status().apps["ubuntu"].units["ubuntu/0"].subordinates[unit(juju)]
        assert st.workload_status.current == "blocked"
    finally:
        juju.config(APP, reset="poll-interval")
        juju.wait(lambda s: jubilant.all_blocked(s, APP))


def test_cli_abort_and_status_paths(juju):
    m = machine(juju)
    # juju exec --machine runs as ubuntu: refused with exit 2 and the
    # commands that work.
    with pytest.raises(jubilant.TaskError) as e:
        juju.exec("nova-live-migration status", machine=m)
    task = e.value.task
    assert task.return_code == 2
    assert "juju exec --unit ubuntu/0 -- nova-live-migration status" in task.stderr
    assert f"juju ssh {m} -- sudo nova-live-migration status" in task.stderr
    # juju exec --unit <principal>: root; no credentials yet, so status says
    # it cannot ask Nova (exit 1), but it is not a refusal.
    with pytest.raises(jubilant.TaskError) as e:
        juju.exec("nova-live-migration status", unit="ubuntu/0")
    assert "needs root" not in e.value.task.stderr
    assert "no evacuation in the journal" in e.value.task.stdout
    # juju ssh -- sudo: root too.
    out = subprocess.run(
        ["juju", "ssh", "--model", juju.model, m, "--", "sudo", "nova-live-migration", "--version"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "nova-live-migration" in out.stdout, out


def task_status(juju, task_id: str) -> str:
    d = json.loads(juju.cli("show-task", task_id, "--format", "json"))
    if "status" in d:
        return d["status"]
    return next(iter(d.values()))["status"]


def wait_task(juju, task_id: str, status: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if task_status(juju, task_id) == status:
            return
        time.sleep(1)
    pytest.fail(f"task {task_id} did not reach {status}")


def test_long_action_then_cancel_task_leaves_the_lock_free(juju, base, fake_keystone):
    # The fake keystone accepts and never answers: evacuate waits on its
    # HTTP timeouts (60 s per request), a long action.
    juju.deploy(fake_keystone, "keystone", base=base)
    juju.integrate(f"{APP}:identity-credentials", "keystone:identity-credentials")
    juju.wait(lambda s: jubilant.all_active(s, "keystone") and jubilant.all_agents_idle(s, APP))
    u = unit(juju)
    out = juju.cli("run", u, "evacuate", "--background")
    task_id = re.search(r"task (\d+)", out).group(1)
    wait_task(juju, task_id, "running")
    juju.cli("cancel-task", task_id)
    wait_task(juju, task_id, "aborted")
    # The run lock died with the process: a new evacuate is not refused as
    # "another evacuate … is running", and the CLI does not see one running.
    with pytest.raises(jubilant.TaskError) as e:
        juju.run(u, "evacuate", {"dry-run": True}, wait=300)
    assert "is running" not in e.value.task.message, e.value.task
    with pytest.raises(jubilant.TaskError) as e:
        juju.exec("nova-live-migration status", unit="ubuntu/0", wait=300)
    assert "(running)" not in e.value.task.stdout and "needs root" not in e.value.task.stderr
    juju.remove_relation(f"{APP}:identity-credentials", "keystone:identity-credentials")
    juju.remove_application("keystone")
    juju.wait(lambda s: jubilant.all_blocked(s, APP) and "keystone" not in s.apps)


def test_refresh_keeps_the_cli_link(juju, charm):
    juju.refresh(APP, path=charm)
    juju.wait(lambda s: jubilant.all_blocked(s, APP) and jubilant.all_agents_idle(s, APP))
    out = juju.ssh(machine(juju), "readlink -f /usr/local/bin/nova-live-migration")
    assert out.strip().endswith("/charm/dispatch"), out


def test_removing_the_relation_and_the_application_cleans_up(juju):
    m = machine(juju)
    juju.remove_relation(f"{APP}:juju-info", "ubuntu:juju-info")
    juju.wait(lambda s: not s.apps["ubuntu"].units["ubuntu/0"].subordinates)
    out = juju.ssh(m, "ls /usr/local/bin/nova-live-migration /var/lib/nova-live-migration/cli-credentials.json 2>&1 || true")
    assert "No such file" in out, out
    juju.remove_application(APP)
    juju.wait(lambda s: APP not in s.apps)
