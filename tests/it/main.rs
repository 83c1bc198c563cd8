//! Integration tests (one crate, modules per area).
