//! Issue 15 end-to-end checks (files): see the module list at the end of tests/e2e.rs.
