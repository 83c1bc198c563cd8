//! Integration tests (one crate, modules per area).

mod cloud;
mod cloud_smoke;
