"""Fixtures of the real-controller suite (tests/juju/README.md).

Every test is skipped, with one reason, when there is no Juju to talk to
(`juju` not on PATH, or `juju whoami` failing): tests/juju/run checks that
first and prints one line instead of starting pytest.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
APP = "nova-live-migration"


def _no_juju_reason() -> str | None:
    if shutil.which("juju") is None:
        return "juju is not on PATH"
    if subprocess.run(["juju", "whoami"], capture_output=True).returncode != 0:
        return "juju whoami fails (no controller logged in)"
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "tier_a: any controller (e.g. LXD), no OpenStack")
    config.addinivalue_line("markers", "tier_b: Charmed OpenStack with two nova-compute units")


def pytest_collection_modifyitems(config, items):
    reason = _no_juju_reason()
    if reason:
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def charm() -> pathlib.Path:
    """The packed charm: NLM_CHARM, else build/nova-live-migration.charm."""
    path = pathlib.Path(os.environ.get("NLM_CHARM", REPO / "build" / "nova-live-migration.charm"))
    if not path.is_file():
        pytest.fail(f"{path} is missing: run charm/pack (tests/juju/run does)")
    return path


@pytest.fixture(scope="session")
def fake_keystone() -> pathlib.Path:
    """tests/juju/fake_keystone packed as a .charm (dispatch mode 0755)."""
    src = pathlib.Path(__file__).parent / "fake_keystone"
    out = pathlib.Path(tempfile.mkdtemp()) / "fake-keystone.charm"
    manifest = (
        "bases:\n"
        "- {name: ubuntu, channel: '22.04', architectures: [amd64]}\n"
        "- {name: ubuntu, channel: '24.04', architectures: [amd64]}\n"
    )
    with zipfile.ZipFile(out, "w") as z:
        for name in ("metadata.yaml", "dispatch"):
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100755 if name == "dispatch" else 0o100644) << 16
            z.writestr(info, (src / name).read_bytes())
        z.writestr("manifest.yaml", manifest)
    return out
