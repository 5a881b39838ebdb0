//! Shared harness of every integration test: where the broker and registry are, and random names.
