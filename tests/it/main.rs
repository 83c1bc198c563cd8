//! Integration tests (one crate, modules per area).

mod charm_files;
mod cloud;
mod cloud_smoke;
mod control_cloud;
mod drain_bad_input;
mod drain_cloud;
mod hooks;
mod juju;
mod openstack_cloud;
mod openstack_fake;
mod policy_cloud;
mod reliability_wire;
mod wire_proxy;
