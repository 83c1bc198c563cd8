//! Integration tests (one crate, modules per area).

mod charm_files;
mod hooks;
mod juju;
mod openstack_cloud;
mod openstack_fake;
