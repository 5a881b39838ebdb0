//! Quick measurement of the generator alone: renders N users, then N sign-on events, of a
//! 1,000,000-user tenant.
//!
//! Usage: `gen_speed [N]`; prints users and events per second (single thread, no HTTP).

use std::time::Instant;

use pingone_sim::TenantSpec;
use pingone_sim::data::Dataset;

#[allow(clippy::cast_precision_loss)]
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
    println!(
        "{n} users in {secs:.3} s: {:.0} users/s, {} bytes/user",
        n as f64 / secs,
        bytes / usize::try_from(n.max(1)).unwrap_or(1)
    );

    let started = Instant::now();
    let (mut events, mut pos, mut bytes) = (0u64, 0u64, 0usize);
    while events < n && pos < d.positions() {
        for e in d.slot_events(pos) {
            bytes += d.event_raw(&e).len();
            events += 1;
        }
        pos += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{events} events from {pos} slots in {secs:.3} s: {:.0} events/s, {} bytes/event",
        events as f64 / secs,
        bytes / usize::try_from(events.max(1)).unwrap_or(1)
    );
}
