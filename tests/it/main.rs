//! Integration tests (one crate, modules per area).

mod openstack_cloud;
mod openstack_fake;
