//! Integration tests (one crate, modules per area).

mod charm_files;
mod hooks;
mod juju;
