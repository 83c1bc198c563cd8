//! Integration tests (one crate, modules per area).

#[path = "../harness/fake_nova.rs"]
mod fake_nova;

mod bad_input;
mod budget_cloud;
mod certs;
mod charm_files;
mod cloud;
mod cloud_smoke;
mod cold_cloud;
mod control_cloud;
mod drain_bad_input;
mod drain_cloud;
mod drain_fake;
mod hooks;
mod juju;
mod juju_model;
mod migratability_cloud;
mod no_panic;
mod openstack_cloud;
mod openstack_fake;
mod other_actors;
mod policy_cloud;
mod qemu_cloud;
mod reliability;
mod reliability_wire;
mod secrets_scan;
mod status_cost;
mod verify_cloud;
mod watch_cloud;
mod wire_edge;
mod wire_proxy;
