//! `transformer license-report`: what the normalized data is for. Reads the users,
//! applications and app usage topics (`read_committed`, from the beginning, consumer group
//! `license-report` by default, never committing) and prints per tenant and per application:
//!
//! - `may_use`: users who may use the application (its group rule evaluated on each user's
//!   `access_group_ids`; no rule: every user). Tenant row: every user.
//! - `active_<N>d`: of those, users whose last access to the application (tenant row: to any
//!   application) is at or after `as_of - N days`, for each configured N (default 30, 60, 90).
//! - `never_used`: of those, users with no recorded access to it (tenant row: to any application).
//! - `inactive_can_authenticate`: of those, users with no access to any application and no
//!   PingOne sign-on (`last_sign_on_at`) within the largest window, whose
//!   `can_authenticate` is true: licenses to reclaim first.
//! - `without_mfa`: of those, users whose `mfa_enabled` is not true.
//!
//! With `--prices FILE` ([`prices`]) it adds, per application and tenant: seats (paid, else
//! `may_use`), unused seats (seats minus the users active in the widest window), the price per
//! seat and month, and the monthly waste, in the file's currency.
//!
//! Where PingOne's own sign-on counts are on the app sign-ons topic ([`signons`]), it adds per
//! application and tenant: the whole UTC days compared, the sign-ons derived from audit
//! activities on them, PingOne's count, the gap between the two and whether it exceeds
//! `--signon-gap`.
//!
//! `license-report reclaim --app APP` ([`reclaim`]) lists instead the users whose seats of one
//! application can be taken back, with the evidence and its provenance, as CSV or JSON.
//!
//! Only users and applications present on their topics count (deleted ones are tombstoned);
//! usage records of deleted users or applications are ignored. Holds one small entry per user,
//! application and (application, user) pair of the selected tenants in memory (with `reclaim`,
//! each user's identity and provenance too).

pub mod html;
pub mod prices;
pub mod reclaim;
pub mod signons;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;

use pipeline_io::kafka::KafkaCallError;
use pipeline_io::registry::RegistryError;
use schemas::time::{now_ms, parse_rfc3339_ms};
use schemas::topics::OutputTopics;
use serde::Serialize;

use crate::config::Config;
use crate::normalize::may_use;
use crate::pipeline::outputs::{OutputError, OutputKind, OutputRecord, read_output};

const DAY_MS: i64 = 86_400_000;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned text table.
    #[default]
    Table,
    /// A JSON array of rows.
    Json,
    /// CSV with a header line.
    Csv,
    /// One self-contained HTML page with charts and a sortable table ([`html`]).
    Html,
}

/// Command-line arguments of `transformer license-report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Activity windows in days, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "30,60,90")]
    pub active_days: Vec<u32>,
    /// The report's "now" (RFC 3339); default: the current time.
    #[arg(long, global = true)]
    pub as_of: Option<String>,
    /// Only this tenant.
    #[arg(long, global = true)]
    pub tenant: Option<String>,
    /// Consumer group of the report's reads (offsets are never committed).
    #[arg(long, global = true, default_value = "license-report")]
    pub group_id: String,
    /// Read topics with this prefix instead of the configured `output_prefix`.
    #[arg(long, global = true)]
    pub input_prefix: Option<String>,
    /// Seat prices (TOML, see `report::prices`): adds seats, unused seats and the monthly waste,
    /// counting as active the users active within the widest `--active-days` window.
    #[arg(long)]
    pub prices: Option<PathBuf>,
    /// Flag an application whose activity-derived sign-on count differs from PingOne's own
    /// count by more than this share of PingOne's (0.1 = 10 %).
    #[arg(long, default_value_t = signons::DEFAULT_GAP)]
    pub signon_gap: f64,
    /// `reclaim`: the seats of one application to take back, with evidence.
    #[command(subcommand)]
    pub action: Option<ReportAction>,
}

/// What `license-report` prints besides its default table.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ReportAction {
    /// The users of one application whose seats can be taken back, with the evidence.
    Reclaim(reclaim::ReclaimArgs),
}

impl Default for ReportArgs {
    fn default() -> Self {
        Self {
            format: Format::Table,
            active_days: vec![30, 60, 90],
            as_of: None,
            tenant: None,
            group_id: "license-report".into(),
            input_prefix: None,
            prices: None,
            signon_gap: signons::DEFAULT_GAP,
            action: None,
        }
    }
}

/// Why the report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// An argument is invalid.
    #[error("license-report: {0}")]
    Args(String),
    /// Kafka failure.
    #[error(transparent)]
    Kafka(#[from] KafkaCallError),
    /// Registry failure.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The normalized topics are not laid out as the transformer writes them.
    #[error("license-report: {0}")]
    Layout(String),
    /// The price file cannot be read or is invalid (every problem, one per line).
    #[error("license-report: price file {path}:\n{problems}")]
    Prices {
        /// The file.
        path: String,
        /// What is wrong with it.
        problems: String,
    },
}

impl From<OutputError> for ReportError {
    fn from(e: OutputError) -> Self {
        match e {
            OutputError::Kafka(e) => Self::Kafka(e),
            OutputError::Registry(e) | OutputError::SchemaLost { source: e, .. } => {
                Self::Registry(e)
            }
            e @ OutputError::Partitions { .. } => Self::Layout(e.to_string()),
        }
    }
}

/// What the report keeps per user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFacts {
    /// `can_authenticate`.
    pub can_authenticate: Option<bool>,
    /// `mfa_enabled`.
    pub mfa_enabled: Option<bool>,
    /// Sorted `access_group_ids`.
    pub access_group_ids: Vec<String>,
    /// `last_sign_on_at`.
    pub last_sign_on_at: Option<i64>,
    /// Who the user is and where the facts come from; read only for `reclaim`.
    pub evidence: Option<Box<reclaim::Evidence>>,
}

/// What the report keeps per application.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppFacts {
    /// `name`.
    pub name: Option<String>,
    /// `access_control_group_type`.
    pub group_type: Option<String>,
    /// `access_control_group_ids`.
    pub group_ids: Vec<String>,
}

/// The report's input for one tenant.
#[derive(Debug, Clone, Default)]
pub struct TenantData {
    /// Users by id.
    pub users: BTreeMap<String, UserFacts>,
    /// Applications by id.
    pub apps: BTreeMap<String, AppFacts>,
    /// Last access time by (application id, user id).
    pub last_access: HashMap<(String, String), i64>,
    /// Days with an access (days since the epoch) by (application id, user id), from the app
    /// usage records' day buckets; read only for the HTML report's chart.
    pub usage_days: HashMap<(String, String), Vec<i32>>,
    /// Accesses per day (days since the epoch, count) by (application id, user id), only for the
    /// days [`signons`] may compare ([`Extras::signon_days`]).
    pub window_counts: HashMap<(String, String), Vec<(i32, u32)>>,
    /// PingOne's sign-on counts by application id and period start (milliseconds).
    pub pingone_signons: BTreeMap<String, BTreeMap<i64, signons::PingonePeriod>>,
}

/// One line of the report; `application_id` is `None` on the tenant's summary line. The seat
/// and money fields are set by [`prices::apply`] (`--prices`), `None` otherwise.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ReportRow {
    /// Tenant.
    pub tenant_id: String,
    /// Application, or `None` for the tenant row.
    pub application_id: Option<String>,
    /// Application name.
    pub application_name: Option<String>,
    /// Users who may use it.
    pub may_use: u64,
    /// Window in days -> active users.
    pub active_last_days: BTreeMap<u32, u64>,
    /// Users who never used it.
    pub never_used: u64,
    /// Users inactive everywhere that can still authenticate.
    pub inactive_can_authenticate: u64,
    /// Users without MFA.
    pub without_mfa: u64,
    /// Seats paid for (from the price file, else `may_use`); tenant row: the sum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seats: Option<u64>,
    /// Seats minus the users active in the widest window; tenant row: the sum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unused_seats: Option<u64>,
    /// Price per seat and month, in `currency`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_price: Option<f64>,
    /// `unused_seats` × `monthly_price`, in `currency`; tenant row: the sum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_waste: Option<f64>,
    /// ISO 4217 code of the amounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Whole UTC days over which the sign-on counts are compared ([`signons`]); `None` when
    /// PingOne reported no counts for it. Tenant row: the most of any application.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signon_days: Option<u32>,
    /// Sign-ons derived from audit activities on those days; tenant row: the sum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signons: Option<u64>,
    /// Sign-ons PingOne counted on those days; tenant row: the sum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pingone_signons: Option<u64>,
    /// `|signons − pingone_signons| / pingone_signons`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signon_gap: Option<f64>,
    /// Whether `signon_gap` is over `--signon-gap`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signon_gap_flagged: Option<bool>,
}

/// Computes the report rows (pure; see the module documentation for each number).
pub fn compute(
    tenants: &BTreeMap<String, TenantData>,
    windows: &[u32],
    as_of_ms: i64,
) -> Vec<ReportRow> {
    let widest = windows.iter().copied().max().unwrap_or(0);
    let cutoff = |days: u32| as_of_ms - i64::from(days) * DAY_MS;
    let mut rows = Vec::new();
    for (tenant, data) in tenants {
        // Newest access to any application, per user (only live users and applications).
        let mut newest_any: HashMap<&str, i64> = HashMap::new();
        let mut per_app: HashMap<&str, HashMap<&str, i64>> = HashMap::new();
        for ((app, user), at) in &data.last_access {
            if !data.users.contains_key(user) || !data.apps.contains_key(app) {
                continue;
            }
            let e = newest_any.entry(user).or_insert(i64::MIN);
            *e = (*e).max(*at);
            per_app.entry(app).or_default().insert(user, *at);
        }
        let inactive_everywhere = |user: &str, facts: &UserFacts| {
            let used = newest_any.get(user).is_some_and(|t| *t >= cutoff(widest));
            let signed_on = facts.last_sign_on_at.is_some_and(|t| t >= cutoff(widest));
            !used && !signed_on
        };
        let row = |app: Option<(&String, &AppFacts)>, usage: Option<&HashMap<&str, i64>>| {
            let mut r = ReportRow {
                tenant_id: tenant.clone(),
                application_id: app.map(|(id, _)| id.clone()),
                application_name: app.and_then(|(_, a)| a.name.clone()),
                may_use: 0,
                active_last_days: windows.iter().map(|w| (*w, 0)).collect(),
                ..ReportRow::default()
            };
            for (user, facts) in &data.users {
                if let Some((_, a)) = app
                    && !may_use(
                        a.group_type.as_deref(),
                        &a.group_ids,
                        &facts.access_group_ids,
                    )
                {
                    continue;
                }
                r.may_use += 1;
                let last = match app {
                    Some(_) => usage.and_then(|u| u.get(user.as_str())).copied(),
                    None => newest_any.get(user.as_str()).copied(),
                };
                match last {
                    None => r.never_used += 1,
                    Some(t) => {
                        for (w, n) in &mut r.active_last_days {
                            if t >= cutoff(*w) {
                                *n += 1;
                            }
                        }
                    }
                }
                if inactive_everywhere(user, facts) && facts.can_authenticate == Some(true) {
                    r.inactive_can_authenticate += 1;
                }
                if facts.mfa_enabled != Some(true) {
                    r.without_mfa += 1;
                }
            }
            r
        };
        rows.push(row(None, None));
        for (id, a) in &data.apps {
            rows.push(row(Some((id, a)), per_app.get(id.as_str())));
        }
    }
    rows
}

/// Which optional column groups a report shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Columns {
    /// Seats and money (`--prices`).
    pub priced: bool,
    /// PingOne's sign-on counts beside ours.
    pub compared: bool,
}

impl Columns {
    /// The groups any of `rows` has values for.
    pub(crate) fn of<'a>(rows: impl IntoIterator<Item = &'a ReportRow>) -> Self {
        rows.into_iter().fold(Self::default(), |c, r| Self {
            priced: c.priced || r.currency.is_some(),
            compared: c.compared || r.pingone_signons.is_some(),
        })
    }
}

/// The names of a row's number columns, in every format's order: `may_use`, `active_<N>d` per
/// window, `never_used`, `inactive_can_authenticate`, `without_mfa`; with prices `seats`,
/// `unused_seats`, `monthly_price`, `monthly_waste`; with PingOne's counts `signon_days`,
/// `signons`, `pingone_signons`, `signon_gap_pct`, `signon_gap_flag`.
pub(crate) fn number_columns(windows: &[u32], with: Columns) -> Vec<String> {
    let mut cols = vec!["may_use".to_owned()];
    cols.extend(windows.iter().map(|w| format!("active_{w}d")));
    cols.extend(["never_used", "inactive_can_authenticate", "without_mfa"].map(String::from));
    if with.priced {
        cols.extend(["seats", "unused_seats", "monthly_price", "monthly_waste"].map(String::from));
    }
    if with.compared {
        cols.extend(
            [
                "signon_days",
                "signons",
                "pingone_signons",
                "signon_gap_pct",
                "signon_gap_flag",
            ]
            .map(String::from),
        );
    }
    cols
}

/// A row's values for [`number_columns`]: counts as integers, money with two decimals, empty
/// where a value is absent.
pub(crate) fn number_cells(r: &ReportRow, windows: &[u32], with: Columns) -> Vec<String> {
    let money = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_default();
    let count = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut c = vec![r.may_use.to_string()];
    c.extend(
        windows
            .iter()
            .map(|w| r.active_last_days.get(w).copied().unwrap_or(0).to_string()),
    );
    c.extend([
        r.never_used.to_string(),
        r.inactive_can_authenticate.to_string(),
        r.without_mfa.to_string(),
    ]);
    if with.priced {
        c.extend([
            count(r.seats),
            count(r.unused_seats),
            money(r.monthly_price),
            money(r.monthly_waste),
        ]);
    }
    if with.compared {
        c.extend([
            r.signon_days.map(|d| d.to_string()).unwrap_or_default(),
            count(r.signons),
            count(r.pingone_signons),
            r.signon_gap
                .map(|g| format!("{:.1}", g * 100.0))
                .unwrap_or_default(),
            match r.signon_gap_flagged {
                Some(true) => "GAP".into(),
                Some(false) => "ok".into(),
                None => String::new(),
            },
        ]);
    }
    c
}

/// Renders rows in `format`.
pub fn render(rows: &[ReportRow], windows: &[u32], format: Format) -> String {
    // Seat and money columns only when prices were applied; sign-on columns only when PingOne
    // reported counts.
    let with = Columns::of(rows);
    let priced = with.priced;
    let mut header: Vec<String> = vec![
        "tenant".into(),
        "application_id".into(),
        "application_name".into(),
    ];
    header.extend(number_columns(windows, with));
    if priced {
        header.push("currency".into());
    }
    let cells = |r: &ReportRow| {
        let mut c = vec![
            r.tenant_id.clone(),
            r.application_id.clone().unwrap_or_else(|| "*".into()),
            r.application_name.clone().unwrap_or_default(),
        ];
        c.extend(number_cells(r, windows, with));
        if priced {
            c.push(r.currency.clone().unwrap_or_default());
        }
        c
    };
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".into());
            s.push('\n');
            s
        }
        Format::Csv => {
            let mut s = header.join(",");
            s.push('\n');
            for r in rows {
                let line: Vec<String> = cells(r).iter().map(|c| csv_cell(c)).collect();
                s.push_str(&line.join(","));
                s.push('\n');
            }
            s
        }
        // HTML needs the usage trend too: `run` renders it with `html::render`; here a table.
        Format::Table | Format::Html => {
            let body: Vec<Vec<String>> = rows.iter().map(cells).collect();
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    body.iter()
                        .map(|r| r[i].chars().count())
                        .chain([header[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let mut s = String::new();
            for line in std::iter::once(&header).chain(body.iter()) {
                let padded: Vec<String> = line
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                let _ = writeln!(s, "{}", padded.join("  ").trim_end());
            }
            s
        }
    }
}

/// A CSV cell: quoted when it holds a comma, a quote or a line break.
fn csv_cell(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_owned()
    }
}

/// What [`read_topics`] keeps besides what every report needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras {
    /// Each user's identity and provenance ([`reclaim::Evidence`]), for `reclaim`.
    pub evidence: bool,
    /// The app usage records' access days ([`TenantData::usage_days`]), for the HTML chart.
    pub days: bool,
    /// The UTC days `[first, last]` whose access counts to keep
    /// ([`TenantData::window_counts`]), for the sign-on comparison.
    pub signon_days: Option<(i32, i32)>,
}

/// How many more times the report asks the registry for a schema that got no answer.
const REGISTRY_RETRIES: u32 = 2;

/// Reads the normalized topics into per-tenant data, with the [`Extras`] asked for. A report is
/// a one-shot command that nothing restarts: a schema request the registry does not answer is
/// asked again, up to [`REGISTRY_RETRIES`] more times
/// ([`pipeline_io::registry::Registry::retrying`]).
///
/// # Errors
/// Kafka or registry failures (transient; the registry's after the last retry); undecodable
/// records are logged and passed over.
pub async fn read_topics(
    config: &Config,
    topics: &OutputTopics,
    group_id: &str,
    tenant: Option<&str>,
    with: Extras,
) -> Result<BTreeMap<String, TenantData>, ReportError> {
    let registry = config.registry.client()?.retrying(REGISTRY_RETRIES);
    let mut tenants: BTreeMap<String, TenantData> = BTreeMap::new();
    for kind in OutputKind::ALL {
        let apply = |key: &str, record: Option<OutputRecord>| {
            let mut parts = key.splitn(3, '/');
            let (Some(t), Some(id)) = (parts.next(), parts.next()) else {
                return;
            };
            if tenant.is_some_and(|want| want != t) {
                return;
            }
            let data = tenants.entry(t.to_owned()).or_default();
            match (kind, record) {
                (OutputKind::Users, None) => {
                    data.users.remove(id);
                }
                (OutputKind::Applications, None) => {
                    data.apps.remove(id);
                }
                (OutputKind::AppUsage, None) => {
                    if let Some(user) = parts.next() {
                        let pair = (id.to_owned(), user.to_owned());
                        data.last_access.remove(&pair);
                        data.usage_days.remove(&pair);
                        data.window_counts.remove(&pair);
                    }
                }
                (OutputKind::AppSignons, None) => {
                    let start = parts.next().and_then(parse_rfc3339_ms);
                    if let (Some(periods), Some(start)) = (data.pingone_signons.get_mut(id), start)
                    {
                        periods.remove(&start);
                    }
                }
                (_, Some(OutputRecord::AppSignons(r))) => {
                    data.pingone_signons
                        .entry(r.application_id)
                        .or_default()
                        .insert(
                            r.period_start,
                            signons::PingonePeriod {
                                end_ms: r.period_end,
                                signons: r.signons,
                                partial: r.partial,
                            },
                        );
                }
                (_, Some(OutputRecord::User(u))) => {
                    let mut groups = u.access_group_ids;
                    groups.sort();
                    let evidence = with.evidence.then(|| {
                        Box::new(reclaim::Evidence {
                            username: u.username,
                            email: u.email,
                            status: u.status,
                            sync_id: u.sync_id,
                            source_topic: u.source_topic,
                            source_partition: u.source_partition,
                            source_offset: u.source_offset,
                            observed_at: u.observed_at,
                        })
                    });
                    data.users.insert(
                        u.user_id,
                        UserFacts {
                            can_authenticate: u.can_authenticate,
                            mfa_enabled: u.mfa_enabled,
                            access_group_ids: groups,
                            last_sign_on_at: u.last_sign_on_at,
                            evidence,
                        },
                    );
                }
                (_, Some(OutputRecord::Application(a))) => {
                    data.apps.insert(
                        a.application_id,
                        AppFacts {
                            name: a.name,
                            group_type: a.access_control_group_type,
                            group_ids: a.access_control_group_ids,
                        },
                    );
                }
                (_, Some(OutputRecord::AppUsage(u))) => {
                    let pair = (u.application_id, u.user_id);
                    if let Some((first, last)) = with.signon_days {
                        let counts: Vec<(i32, u32)> = u
                            .daily_access_counts
                            .iter()
                            .filter(|d| (first..=last).contains(&d.day))
                            .map(|d| (d.day, u32::try_from(d.count).unwrap_or(0)))
                            .collect();
                        if counts.is_empty() {
                            data.window_counts.remove(&pair);
                        } else {
                            data.window_counts.insert(pair.clone(), counts);
                        }
                    }
                    if with.days {
                        let days = u.daily_access_counts.iter().map(|d| d.day).collect();
                        data.usage_days.insert(pair.clone(), days);
                    }
                    data.last_access.insert(pair, u.last_access_at);
                }
            }
        };
        match read_output(config, &registry, group_id, topics, kind, apply).await {
            // Written by transformers since the sign-on counts came: an older deployment's
            // outputs have none, and the report goes on without the comparison.
            Err(OutputError::Kafka(e))
                if kind == OutputKind::AppSignons
                    && e.source.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition) =>
            {
                tracing::info!(topic = %topics.app_signons, "no sign-on counts topic: the report has no PingOne comparison");
            }
            result => {
                result?;
            }
        }
    }
    Ok(tenants)
}

/// Runs the report and returns its text.
///
/// # Errors
/// Bad arguments, Kafka or registry failures.
pub async fn run(config: &Config, args: &ReportArgs) -> Result<String, ReportError> {
    if args.active_days.is_empty() || args.active_days.contains(&0) {
        return Err(ReportError::Args(
            "--active-days needs positive numbers of days".into(),
        ));
    }
    let as_of = match &args.as_of {
        Some(t) => parse_rfc3339_ms(t)
            .ok_or_else(|| ReportError::Args(format!("--as-of `{t}` is not RFC 3339")))?,
        None => now_ms(),
    };
    let topics = match &args.input_prefix {
        Some(prefix) => OutputTopics::new(prefix),
        None => config.kafka.topics.clone(),
    };
    if let Some(ReportAction::Reclaim(r)) = &args.action {
        if r.inactive_days == 0 {
            return Err(ReportError::Args(
                "--inactive-days needs a positive number of days".into(),
            ));
        }
        let tenants = read_topics(
            config,
            &topics,
            &args.group_id,
            args.tenant.as_deref(),
            Extras {
                evidence: true,
                days: false,
                signon_days: None,
            },
        )
        .await?;
        let rows = reclaim::compute(&tenants, &r.app, r.inactive_days, as_of).ok_or_else(|| {
            ReportError::Args(format!(
                "no application with the id or name `{}` on {}",
                r.app, topics.applications
            ))
        })?;
        return Ok(reclaim::render(&rows, r.format));
    }
    let prices = match &args.prices {
        Some(path) => {
            let problem = |problems: String| ReportError::Prices {
                path: path.display().to_string(),
                problems,
            };
            let text = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
            Some(prices::Prices::parse(&text).map_err(problem)?)
        }
        None => None,
    };
    if !(args.signon_gap.is_finite() && args.signon_gap >= 0.0) {
        return Err(ReportError::Args(
            "--signon-gap needs a share of 0 or more (0.1 = 10 %)".into(),
        ));
    }
    let tenants = read_topics(
        config,
        &topics,
        &args.group_id,
        args.tenant.as_deref(),
        Extras {
            evidence: false,
            days: args.format == Format::Html,
            signon_days: Some(signons::window_days(as_of)),
        },
    )
    .await?;
    let mut rows = compute(&tenants, &args.active_days, as_of);
    // Rows come per tenant, the tenant row first.
    for of_tenant in rows.chunk_by_mut(|a, b| a.tenant_id == b.tenant_id) {
        if let Some(data) = tenants.get(&of_tenant[0].tenant_id) {
            signons::apply(of_tenant, &signons::compare(data, as_of), args.signon_gap);
        }
    }
    if let Some(p) = &prices {
        let widest = args.active_days.iter().copied().max().unwrap_or(0);
        prices::apply(&mut rows, p, widest);
    }
    if args.format == Format::Html {
        let trends = tenants
            .iter()
            .map(|(t, data)| (t.clone(), html::daily_active_users(data, as_of)))
            .collect();
        return Ok(html::render(&rows, &args.active_days, &trends, as_of));
    }
    Ok(render(&rows, &args.active_days, args.format))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> BTreeMap<String, TenantData> {
        let now = 1_000 * DAY_MS;
        let user = |auth: bool, mfa: bool, groups: &[&str], sign_on: Option<i64>| UserFacts {
            can_authenticate: Some(auth),
            mfa_enabled: Some(mfa),
            access_group_ids: groups.iter().map(|g| (*g).to_owned()).collect(),
            last_sign_on_at: sign_on,
            evidence: None,
        };
        let mut t = TenantData::default();
        t.users.insert("u1".into(), user(true, true, &["g"], None));
        t.users.insert("u2".into(), user(true, false, &[], None));
        t.users
            .insert("u3".into(), user(false, false, &["g"], None));
        t.users
            .insert("u4".into(), user(true, false, &[], Some(now - DAY_MS)));
        t.apps.insert(
            "open".into(),
            AppFacts {
                name: Some("Open".into()),
                group_type: None,
                group_ids: vec![],
            },
        );
        t.apps.insert(
            "gated".into(),
            AppFacts {
                name: None,
                group_type: Some("ANY_GROUP".into()),
                group_ids: vec!["g".into()],
            },
        );
        t.last_access
            .insert(("open".into(), "u1".into()), now - 10 * DAY_MS);
        t.last_access
            .insert(("open".into(), "u2".into()), now - 45 * DAY_MS);
        t.last_access
            .insert(("gated".into(), "u1".into()), now - 100 * DAY_MS);
        // Usage of a deleted user is ignored.
        t.last_access.insert(("open".into(), "gone".into()), now);
        BTreeMap::from([("acme".to_owned(), t)])
    }

    #[test]
    fn numbers_per_tenant_and_application() {
        let rows = compute(&data(), &[30, 60, 90], 1_000 * DAY_MS);
        assert_eq!(rows.len(), 3);
        let tenant = &rows[0];
        assert_eq!(tenant.application_id, None);
        assert_eq!(tenant.may_use, 4);
        assert_eq!(
            tenant.active_last_days,
            BTreeMap::from([(30, 1), (60, 2), (90, 2)])
        );
        assert_eq!(tenant.never_used, 2);
        // u3 cannot authenticate, u4 signed on yesterday, u1 and u2 used an app: nobody.
        assert_eq!(tenant.inactive_can_authenticate, 0);
        assert_eq!(tenant.without_mfa, 3);
        let gated = &rows[1];
        assert_eq!(gated.application_id.as_deref(), Some("gated"));
        assert_eq!(gated.may_use, 2);
        assert_eq!(
            gated.active_last_days,
            BTreeMap::from([(30, 0), (60, 0), (90, 0)])
        );
        assert_eq!(gated.never_used, 1);
        let open = &rows[2];
        assert_eq!(open.may_use, 4);
        assert_eq!(
            open.active_last_days,
            BTreeMap::from([(30, 1), (60, 2), (90, 2)])
        );
        assert_eq!(open.never_used, 2);
        assert_eq!(open.without_mfa, 3);
        // With a 20-day widest window, u2 (45 days ago) is inactive and can authenticate.
        let rows = compute(&data(), &[20], 1_000 * DAY_MS);
        assert_eq!(rows[0].inactive_can_authenticate, 1);
    }

    #[test]
    fn formats() {
        let rows = compute(&data(), &[30, 60, 90], 1_000 * DAY_MS);
        let csv = render(&rows, &[30, 60, 90], Format::Csv);
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some(
                "tenant,application_id,application_name,may_use,active_30d,active_60d,active_90d,never_used,inactive_can_authenticate,without_mfa"
            )
        );
        assert_eq!(lines.next(), Some("acme,*,,4,1,2,2,2,0,3"));
        let json: serde_json::Value =
            serde_json::from_str(&render(&rows, &[30], Format::Json)).unwrap();
        assert_eq!(json[2]["application_name"], "Open");
        assert_eq!(json[2]["active_last_days"]["60"], 2);
        let table = render(&rows, &[30, 60, 90], Format::Table);
        assert!(
            table.lines().nth(1).unwrap().starts_with("acme    *"),
            "{table}"
        );
        assert_eq!(table.lines().count(), 4);
    }
}
