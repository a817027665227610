//! Helpers for the integration tests that boot real VMs.
