"""Controllable fake virt driver for the nova-live-migration test cloud.

`cloud up` copies this module into the venv's ``nova/virt/`` package and sets
``compute_driver = nlm_fake_driver.NlmFakeDriver``.

It is nova's ``FakeDriverWithoutFakeNodes`` (stable node UUID from
``state_path/compute_id``) with a live migration that behaves like the
libvirt driver's, as seen through the API:

* a migration takes ``NLM_FAKE_MIGRATION_SECONDS`` (env of nova-compute,
  default 2) or the server metadata ``nlm_migration_seconds``;
* every 0.5 s it writes ``memory_total/processed/remaining`` (and the disk
  counters, 0) to the migration record and ``progress`` to the instance, as
  ``nova.virt.libvirt.migration.save_stats`` does; the memory size is the
  flavor's RAM;
* force-complete finishes it at once; abort ends it with migration status
  ``cancelled`` and the server ACTIVE on the source;
* server metadata ``nlm_failure`` picks a failure:
  ``fail`` -> migration ``failed``, server ACTIVE on the source (at half time);
  ``error`` -> the driver raises: migration ``error``, server ERROR (at half time);
  ``precheck`` -> the destination pre-check raises MigrationPreCheckError:
  migration ``error``, server ACTIVE on the source;
* server metadata ``nlm_stall_at=<percent>`` (or env ``NLM_FAKE_STALL_AT``)
  stops the progress at that percent (remaining memory no longer shrinks,
  processed bytes keep growing like re-sent dirty pages) until the
  migration is force-completed or aborted.
* server metadata ``nlm_failure=cold`` makes a cold migration fail on the
  source: ``migrate_disk_and_power_off`` raises ``InstanceFaultRollback``,
  so nova-compute puts the instance back in the state it had (stopped) on
  the source and the migration record in ``error``
  (``nova/compute/manager.py`` ``_error_out_instance_on_exception``).
* server metadata ``nlm_power_off_hold=<path>`` holds a power-off (task_state
  ``powering-off``) for as long as that file exists (at most 300 s): a test
  opens a window it closes itself, so what others do while an instance is
  being stopped is not a matter of speed.

Each node also reports the vTPM traits of a libvirt host with swtpm and a
``VGPU`` inventory (4) and two passthrough PCI devices (alias ``nlm-pci``),
so flavors with ``hw:tpm_version``, ``resources:VGPU`` or
``pci_passthrough:alias`` boot here.

Env ``NLM_FAKE_NODENAME`` (set by ``cloud up`` with ``NLM_CLOUD_SHORT_HOSTS``)
names the node (hypervisor_hostname, Placement provider) apart from the
service host, as on clouds deployed without ``use_fqdn_hint``.

State is kept per instance UUID, so concurrent migrations from one host are
independent.
"""

import os
import threading
import time

from oslo_log import log as logging
from oslo_serialization import jsonutils

from nova import exception
from nova.compute import power_state
from nova.virt import fake

LOG = logging.getLogger(__name__)

TICK = 0.5

# vTPM support as libvirt reports it with swtpm (versions, models, secret
# security modes), and the vGPUs of a host's mediated devices.
TPM_TRAITS = (
    "COMPUTE_SECURITY_TPM_1_2", "COMPUTE_SECURITY_TPM_2_0",
    "COMPUTE_SECURITY_TPM_TIS", "COMPUTE_SECURITY_TPM_CRB",
    "COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER", "COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST",
)
VGPUS = 4
# Two passthrough PCI devices of every node: [pci] device_spec and alias nlm-pci
# in the cloud's nova.conf name it.
PCI_DEVICES = [{"address": "0000:81:00.%d" % fn, "vendor_id": "8086", "product_id": "0d58",
                "dev_type": "type-PCI", "status": "available", "parent_addr": None,
                "numa_node": None, "label": "label_8086_0d58"} for fn in range(2)]


def _env_float(name, default):
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


class _Migration:
    def __init__(self):
        self.action = None  # None | "force-complete" | "abort"
        self.lock = threading.Lock()

    def request(self, action):
        with self.lock:
            if self.action is None:
                self.action = action

    def pending(self):
        with self.lock:
            return self.action


class NlmFakeDriver(fake.FakeDriverWithoutFakeNodes):
    """Fake driver with slow, observable, controllable live migrations."""

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        self._nlm_migrations = {}
        self._nlm_lock = threading.Lock()

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _meta(instance):
        try:
            return dict(instance.metadata or {})
        except Exception:  # noqa: BLE001 - metadata is best effort
            return {}

    def _knobs(self, instance):
        meta = self._meta(instance)
        seconds = _env_float("NLM_FAKE_MIGRATION_SECONDS", 2.0)
        if meta.get("nlm_migration_seconds"):
            try:
                seconds = float(meta["nlm_migration_seconds"])
            except ValueError:
                pass
        stall = os.environ.get("NLM_FAKE_STALL_AT", "")
        stall = meta.get("nlm_stall_at", stall)
        try:
            stall = float(stall) if stall not in (None, "") else None
        except ValueError:
            stall = None
        return max(seconds, 0.0), stall, meta.get("nlm_failure", "")

    def _save_stats(self, instance, migration, total, processed, remaining):
        migration.memory_total = total
        migration.memory_processed = processed
        migration.memory_remaining = remaining
        migration.disk_total = 0
        migration.disk_processed = 0
        migration.disk_remaining = 0
        migration.save()
        pct_remaining = round(remaining * 100 / total) if total else 100
        instance.progress = 100 - pct_remaining
        instance.save()

    # ------------------------------------------------------------ host
    def init_host(self, host):
        super().init_host(host)
        nodename = os.environ.get("NLM_FAKE_NODENAME", "")
        if nodename:
            # FakeDriver names its one node after the service host; the
            # compute node record, os-hypervisors and the Placement provider
            # take this name instead.
            self._set_nodes([nodename])
            self.host_status_base["hypervisor_hostname"] = nodename

    def update_provider_tree(self, provider_tree, nodename, allocations=None):
        # What a libvirt host with swtpm and a mediated-device GPU reports, so
        # flavors with hw:tpm_* or resources:VGPU extra specs can be booted
        # here (the pre-check tests need such instances on real Nova).
        super().update_provider_tree(provider_tree, nodename, allocations=allocations)
        inv = provider_tree.data(nodename).inventory
        inv = dict(inv)
        inv["VGPU"] = {"total": VGPUS, "min_unit": 1, "max_unit": VGPUS, "step_size": 1,
                       "allocation_ratio": 1.0, "reserved": 0}
        provider_tree.update_inventory(nodename, inv)
        provider_tree.add_traits(nodename, *TPM_TRAITS)

    def get_available_resource(self, nodename):
        # Two passthrough PCI devices (matched by [pci] device_spec and the
        # alias nlm-pci of the cloud's nova.conf), as FakeDriverWithPciResources does.
        res = super().get_available_resource(nodename)
        if res:
            res["pci_passthrough_devices"] = jsonutils.dumps(PCI_DEVICES)
        return res

    def get_host_uptime(self):
        return " %s up 1 day,  0:00,  0 users,  load average: 0.00, 0.00, 0.00" % time.strftime("%H:%M:%S")

    def get_info(self, instance, use_cache=True):
        # After a compute restart the in-memory guest list is empty: adopt the
        # ACTIVE instances the database places on this host, as a real
        # hypervisor would still be running them.
        if (instance.uuid not in self.instances and instance.host == self._host
                and instance.vm_state == "active" and not instance.task_state):
            self.instances[instance.uuid] = fake.FakeInstance(
                instance.name, power_state.RUNNING, instance.uuid)
        return super().get_info(instance, use_cache)

    # ------------------------------------------------------------ live migration
    def check_can_live_migrate_destination(self, context, instance, src_compute_info, dst_compute_info,
                                           block_migration=False, disk_over_commit=False):
        if self._meta(instance).get("nlm_failure") == "precheck":
            raise exception.MigrationPreCheckError(
                reason="destination pre-check failed (nlm_failure=precheck on %s)" % instance.uuid)
        return super().check_can_live_migrate_destination(
            context, instance, src_compute_info, dst_compute_info, block_migration, disk_over_commit)

    def live_migration(self, context, instance, dest, post_method, recover_method,
                       block_migration=False, migrate_data=None):
        state = _Migration()
        with self._nlm_lock:
            self._nlm_migrations[instance.uuid] = state
        try:
            self._run_migration(context, instance, dest, post_method, recover_method,
                                block_migration, migrate_data, state)
        finally:
            with self._nlm_lock:
                if self._nlm_migrations.get(instance.uuid) is state:
                    del self._nlm_migrations[instance.uuid]

    def _run_migration(self, context, instance, dest, post_method, recover_method,
                       block_migration, migrate_data, state):
        seconds, stall_at, failure = self._knobs(instance)
        migration = migrate_data.migration
        try:
            total = int(instance.flavor.memory_mb) * 1024 * 1024
        except Exception:  # noqa: BLE001
            total = 64 * 1024 * 1024
        LOG.info("Starting fake live migration to %(dest)s: %(secs)s s, stall_at=%(stall)s, "
                 "failure=%(fail)s", {"dest": dest, "secs": seconds, "stall": stall_at,
                                      "fail": failure or "none"}, instance=instance)
        start = time.monotonic()
        processed = 0
        n = 0
        while True:
            action = state.pending()
            elapsed = time.monotonic() - start
            frac = 1.0 if seconds <= 0 else min(elapsed / seconds, 1.0)
            if failure in ("fail", "error") and frac >= 0.5:
                break
            stalled = stall_at is not None and frac * 100 >= stall_at
            if stalled:
                frac = min(stall_at, 100) / 100.0
            remaining = int(total * (1 - frac))
            # bytes sent so far: what left the source, plus re-sent dirty pages while stalled
            processed = max(processed + (total // 50 if stalled else 0), total - remaining)
            if action == "force-complete":
                self._save_stats(instance, migration, total, max(processed, total), 0)
                LOG.info("Migration operation was force-completed", instance=instance)
                post_method(context, instance, dest, block_migration, migrate_data)
                return
            if action == "abort":
                LOG.warning("Migration operation was cancelled", instance=instance)
                recover_method(context, instance, dest, migrate_data, migration_status="cancelled")
                return
            if frac >= 1.0 and not stalled:
                self._save_stats(instance, migration, total, max(processed, total), 0)
                LOG.info("Migration operation has completed", instance=instance)
                post_method(context, instance, dest, block_migration, migrate_data)
                return
            self._save_stats(instance, migration, total, processed, remaining)
            if n % 10 == 0:
                LOG.info("Migration running for %(secs)d secs, memory %(rem)d%% remaining "
                         "(bytes processed=%(p)d, remaining=%(r)d, total=%(t)d)%(st)s.",
                         {"secs": elapsed, "rem": round(remaining * 100 / total) if total else 100,
                          "p": processed, "r": remaining, "t": total,
                          "st": " (stalled)" if stalled else ""}, instance=instance)
            n += 1
            time.sleep(TICK)
        if failure == "fail":
            LOG.error("Migration operation has aborted (nlm_failure=fail)", instance=instance)
            recover_method(context, instance, dest, migrate_data)
            return
        LOG.error("Live migration failed in the hypervisor (nlm_failure=error)", instance=instance)
        raise exception.MigrationError(reason="fake hypervisor error (nlm_failure=error)")

    def migrate_disk_and_power_off(self, context, instance, dest, flavor, network_info,
                                   block_device_info=None, timeout=0, retry_interval=0):
        if self._meta(instance).get("nlm_failure") == "cold":
            LOG.error("Cold migration failed on the source (nlm_failure=cold)", instance=instance)
            raise exception.InstanceFaultRollback(
                inner_exception=exception.MigrationError(
                    reason="fake disk copy failed (nlm_failure=cold)"))
        return super().migrate_disk_and_power_off(
            context, instance, dest, flavor, network_info, block_device_info, timeout, retry_interval)

    def power_off(self, instance, timeout=0, retry_interval=0):
        hold = self._meta(instance).get("nlm_power_off_hold")
        deadline = time.monotonic() + 300
        while hold and os.path.exists(hold) and time.monotonic() < deadline:
            time.sleep(TICK)
        return super().power_off(instance, timeout, retry_interval)

    def live_migration_force_complete(self, instance):
        with self._nlm_lock:
            state = self._nlm_migrations.get(instance.uuid)
        if state is None:
            raise exception.NoActiveMigrationForInstance(instance_id=instance.uuid)
        state.request("force-complete")

    def live_migration_abort(self, instance):
        with self._nlm_lock:
            state = self._nlm_migrations.get(instance.uuid)
        if state is None:
            raise exception.NoActiveMigrationForInstance(instance_id=instance.uuid)
        state.request("abort")

    def post_live_migration(self, context, instance, block_device_info, migrate_data=None):
        # Runs on the source after success: the guest is gone from here.
        self.destroy(context, instance, network_info=None, block_device_info=block_device_info)
