//! A simulator of the PingOne token, directory and audit APIs for tests, demos and benchmarks.
