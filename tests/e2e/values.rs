//! Issue 15 end-to-end checks (values): see the module list at the end of tests/e2e.rs.
