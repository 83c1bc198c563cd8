//! nova-live-migration: a Juju subordinate charm that drains an OpenStack
//! compute node by live migration. See ARCHITECTURE.md for the map.

pub mod actions;
pub mod charm;
pub mod cli;
pub mod config;
pub mod control;
pub mod credentials;
pub mod drain;
pub mod hint;
pub mod host;
pub mod journal;
pub mod juju;
pub mod openstack;
pub mod paths;
pub mod plan;
pub mod text;
pub mod time;
