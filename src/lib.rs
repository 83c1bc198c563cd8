//! nova-live-migration: a Juju subordinate charm that drains an OpenStack
//! compute node by live migration. See ARCHITECTURE.md for the map.

pub mod actions;
pub mod charm;
pub mod cli;
pub mod config;
pub mod control;
pub mod credentials;
pub mod drain;
pub mod fleet;
pub mod gather;
pub mod hint;
pub mod host;
pub mod juju;
pub mod openstack;
pub mod paths;
pub mod plan;
pub mod ready;
pub mod runtime;
pub mod state;
pub mod text;
pub mod time;
pub mod watch;

#[cfg(test)]
mod module_graph;
