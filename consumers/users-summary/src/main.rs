//! `users-summary [TOPIC]` (default `usage.users.v1`): prints the per-tenant summary of the
//! normalized users topic ([`users_summary::summarize`]). Needs `KAFKA_BOOTSTRAP_SERVERS` and
//! `SCHEMA_REGISTRY_URL` (`eval "$(deploy/local/up)"`).

use anyhow::Context;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let topic = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "usage.users.v1".into());
    let env = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let lines = users_summary::summarize(
        &env("KAFKA_BOOTSTRAP_SERVERS")?,
        &env("SCHEMA_REGISTRY_URL")?,
        &topic,
    )
    .await?;
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
