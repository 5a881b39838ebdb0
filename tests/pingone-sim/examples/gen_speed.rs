//! Quick measurement of the generator alone: renders and serializes N users of a tenant.
//!
//! Usage: `gen_speed [N]`; prints users per second (single thread, no HTTP).

use std::time::Instant;

use pingone_sim::TenantSpec;
use pingone_sim::data::Dataset;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let d = Dataset::new(
        &TenantSpec::generated("speed", 1_000_000, 42),
        1_795_000_000_000,
    );
    let started = Instant::now();
    let mut bytes = 0usize;
    for i in 0..n {
        bytes += d.user_raw(i).len();
    }
    let secs = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / secs;
    println!(
        "{n} users in {secs:.3} s: {rate:.0} users/s, {} bytes/user",
        bytes / usize::try_from(n).unwrap_or(1)
    );
}
