//! Thin binary over the transformer library.
fn main() {}
