//! Integration tests (one crate, modules per area).

mod openstack_fake;
