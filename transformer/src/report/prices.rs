//! Seat prices for `license-report --prices FILE`: what each application's seats cost, from a small
//! TOML file, and the money the report shows with them.
//!
//! ```toml
//! currency = "EUR"        # ISO 4217 code, shown beside every amount
//! period = "month"        # what the prices are per: "month" (default) or "year"
//! default_price = 6.0     # per seat, for applications not listed (optional)
//!
//! [[application]]
//! name = "Slack"          # or id = "<PingOne application id>"; names match case-insensitively
//! price = 8.75            # per seat and period (optional: then default_price)
//! seats = 120             # seats paid for (optional: then the users who may use it)
//! ```
//!
//! Waste is counted per application: seats (paid, else the users who may use it) minus the users
//! active within the report's widest `--active-days` window, times the monthly price (a yearly
//! price divided by 12). The tenant row sums its applications.

use std::collections::HashMap;

use serde::Deserialize;

use super::ReportRow;

/// What the prices of a price file are per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// Per seat and month.
    #[default]
    Month,
    /// Per seat and year.
    Year,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    currency: String,
    #[serde(default)]
    period: Period,
    #[serde(default)]
    default_price: Option<f64>,
    #[serde(default, rename = "application")]
    applications: Vec<AppEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppEntry {
    id: Option<String>,
    name: Option<String>,
    price: Option<f64>,
    seats: Option<u64>,
}

/// The price and paid seats of one application; `None` where the file does not say.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AppPrice {
    /// Price per seat and month.
    pub monthly: Option<f64>,
    /// Seats paid for.
    pub seats: Option<u64>,
}

/// A checked price file, prices converted to per month.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Prices {
    /// ISO 4217 currency code.
    pub currency: String,
    default_monthly: Option<f64>,
    by_id: HashMap<String, AppPrice>,
    /// Keyed by lowercase name.
    by_name: HashMap<String, AppPrice>,
}

impl Prices {
    /// Parses and checks a price file; the error lists every problem found, one per line.
    ///
    /// # Errors
    /// TOML syntax, unknown keys, a currency that is not three capital letters, a negative or
    /// non-finite price, an entry with both or neither of `id` and `name`, a duplicate entry.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: PriceFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut problems = Vec::new();
        if file.currency.len() != 3 || !file.currency.chars().all(|c| c.is_ascii_uppercase()) {
            problems.push(format!(
                "currency `{}`: want an ISO 4217 code such as USD or EUR",
                file.currency
            ));
        }
        let per_month = |p: f64| match file.period {
            Period::Month => p,
            Period::Year => p / 12.0,
        };
        let check_price = |problems: &mut Vec<String>, what: &str, p: Option<f64>| match p {
            Some(p) if !p.is_finite() || p < 0.0 => {
                problems.push(format!("{what}: price {p} must be a number ≥ 0"));
                None
            }
            other => other.map(per_month),
        };
        let default_monthly = check_price(&mut problems, "default_price", file.default_price);
        let mut prices = Self {
            currency: file.currency.clone(),
            default_monthly,
            ..Self::default()
        };
        for (i, entry) in file.applications.iter().enumerate() {
            let what = format!("application[{i}]");
            let price = AppPrice {
                monthly: check_price(&mut problems, &what, entry.price),
                seats: entry.seats,
            };
            let (map, key) = match (&entry.id, &entry.name) {
                (Some(id), None) => (&mut prices.by_id, id.clone()),
                (None, Some(name)) => (&mut prices.by_name, name.to_lowercase()),
                _ => {
                    problems.push(format!("{what}: give either `id` or `name`"));
                    continue;
                }
            };
            if entry.price.is_none() && entry.seats.is_none() {
                problems.push(format!("{what}: give `price`, `seats` or both"));
            }
            if map.insert(key.clone(), price).is_some() {
                problems.push(format!("{what}: `{key}` is listed twice"));
            }
        }
        if problems.is_empty() {
            Ok(prices)
        } else {
            Err(problems.join("\n"))
        }
    }

    /// The price of an application: its entry by id, else by name, with the default price
    /// where the entry gives none.
    pub fn for_app(&self, id: &str, name: Option<&str>) -> AppPrice {
        let entry = self
            .by_id
            .get(id)
            .or_else(|| name.and_then(|n| self.by_name.get(&n.to_lowercase())));
        let entry = entry.copied().unwrap_or_default();
        AppPrice {
            monthly: entry.monthly.or(self.default_monthly),
            seats: entry.seats,
        }
    }
}

/// Adds seats, unused seats, price and monthly waste to `rows` (as [`super::compute`] made them),
/// counting as active the users active within `window` days, which must be one of the rows'
/// windows. Tenant rows get the sums of their applications; their waste is `None` when no
/// application of the tenant has a price.
pub fn apply(rows: &mut [ReportRow], prices: &Prices, window: u32) {
    let mut tenant_row: Option<usize> = None;
    for i in 0..rows.len() {
        let row = &mut rows[i];
        row.currency = Some(prices.currency.clone());
        let Some(app) = row.application_id.clone() else {
            row.seats = Some(0);
            row.unused_seats = Some(0);
            tenant_row = Some(i);
            continue;
        };
        let price = prices.for_app(&app, row.application_name.as_deref());
        let seats = price.seats.unwrap_or(row.may_use);
        let active = row.active_last_days.get(&window).copied().unwrap_or(0);
        let unused = seats.saturating_sub(active);
        row.seats = Some(seats);
        row.unused_seats = Some(unused);
        row.monthly_price = price.monthly;
        row.monthly_waste = price.monthly.map(|p| cents(p * unused as f64));
        let (seats, waste) = (row.seats, row.monthly_waste);
        if let Some(t) = tenant_row
            && rows[t].tenant_id == rows[i].tenant_id
        {
            let total = &mut rows[t];
            total.seats = Some(total.seats.unwrap_or(0) + seats.unwrap_or(0));
            total.unused_seats = Some(total.unused_seats.unwrap_or(0) + unused);
            if let Some(w) = waste {
                total.monthly_waste = Some(cents(total.monthly_waste.unwrap_or(0.0) + w));
            }
        }
    }
}

/// Rounded to cents.
fn cents(amount: f64) -> f64 {
    (amount * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const FILE: &str = r#"
currency = "EUR"
period = "year"
default_price = 60.0

[[application]]
name = "slack"
price = 120.0
seats = 10

[[application]]
id = "gated"
seats = 3
"#;

    fn row(app: Option<&str>, name: Option<&str>, may_use: u64, active_90: u64) -> ReportRow {
        ReportRow {
            tenant_id: "acme".into(),
            application_id: app.map(str::to_owned),
            application_name: name.map(str::to_owned),
            may_use,
            active_last_days: BTreeMap::from([(30, 0), (90, active_90)]),
            ..ReportRow::default()
        }
    }

    #[test]
    fn waste_per_application_and_tenant() {
        let prices = Prices::parse(FILE).unwrap();
        let mut rows = vec![
            row(None, None, 20, 6),
            row(Some("s-1"), Some("Slack"), 20, 4),
            row(Some("gated"), None, 2, 1),
            row(Some("other"), Some("Other"), 5, 5),
        ];
        apply(&mut rows, &prices, 90);
        // Slack: 10 paid seats, 4 active, 120/year = 10/month: 6 unused, 60.00 a month.
        assert_eq!(rows[1].seats, Some(10));
        assert_eq!(rows[1].unused_seats, Some(6));
        assert_eq!(rows[1].monthly_price, Some(10.0));
        assert_eq!(rows[1].monthly_waste, Some(60.0));
        // gated: 3 paid seats, 1 active, the default 60/year = 5/month: 2 unused, 10.00.
        assert_eq!(rows[2].unused_seats, Some(2));
        assert_eq!(rows[2].monthly_waste, Some(10.0));
        // other: no seats given, so the 5 who may use it; all active: no waste.
        assert_eq!(rows[3].seats, Some(5));
        assert_eq!(rows[3].monthly_waste, Some(0.0));
        // The tenant row sums its applications.
        assert_eq!(rows[0].seats, Some(18));
        assert_eq!(rows[0].unused_seats, Some(8));
        assert_eq!(rows[0].monthly_waste, Some(70.0));
        assert_eq!(rows[0].currency.as_deref(), Some("EUR"));
    }

    #[test]
    fn unpriced_applications_have_no_waste() {
        let prices =
            Prices::parse("currency = \"USD\"\n[[application]]\nid = \"a\"\nseats = 4\n").unwrap();
        let mut rows = vec![row(None, None, 9, 1), row(Some("a"), None, 9, 1)];
        apply(&mut rows, &prices, 90);
        assert_eq!(rows[1].unused_seats, Some(3));
        assert_eq!(rows[1].monthly_waste, None);
        assert_eq!(rows[0].monthly_waste, None);
    }

    #[test]
    fn every_problem_of_a_price_file_is_named() {
        let err = Prices::parse(
            r#"
currency = "euro"
default_price = -1.0
[[application]]
id = "a"
name = "A"
price = 1.0
[[application]]
id = "b"
[[application]]
id = "c"
price = 2.0
[[application]]
id = "c"
seats = 1
"#,
        )
        .unwrap_err();
        for part in [
            "currency `euro`",
            "default_price: price -1",
            "application[0]: give either `id` or `name`",
            "application[1]: give `price`, `seats` or both",
            "application[3]: `c` is listed twice",
        ] {
            assert!(err.contains(part), "{part:?} missing from:\n{err}");
        }
        let unknown = Prices::parse("currency = \"EUR\"\nprise = 3\n").unwrap_err();
        assert!(unknown.contains("prise"), "{unknown}");
    }
}
