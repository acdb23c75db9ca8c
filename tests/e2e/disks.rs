//! Issue 15 end-to-end checks (disks): see the module list at the end of tests/e2e.rs.
