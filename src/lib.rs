//! nova-live-migration: a Juju subordinate charm that drains an OpenStack
//! compute node by live migration. See ARCHITECTURE.md for the map.

pub mod openstack;
pub mod plan;
