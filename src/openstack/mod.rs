//! OpenStack client (Keystone, Nova, Placement). The only module that speaks HTTP.
