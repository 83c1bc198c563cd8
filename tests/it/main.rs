//! Integration tests (one crate, modules per area).

mod bad_input;
mod certs;
mod charm_files;
mod cloud;
mod cloud_smoke;
mod control_cloud;
mod drain_bad_input;
mod drain_cloud;
mod hooks;
mod juju;
mod juju_model;
mod openstack_cloud;
mod openstack_fake;
mod policy_cloud;
mod reliability;
mod reliability_wire;
mod secrets_scan;
mod wire_proxy;
