//! PingOne's own sign-on counts beside ours. PingOne counts successful sign-ons per application
//! (`GET /applicationSignons`, on the app sign-ons topic); the pipeline counts the
//! `USER.ACCESS_ALLOWED` audit activities of each application (the app usage records' day
//! buckets). `license-report` puts the two side by side over the same days and flags an
//! application whose counts differ by more than a share (`--signon-gap`, default 10 %): audit
//! activities that the pipeline missed, or sign-ons PingOne counts that leave no audit event.
//!
//! The days compared are the whole UTC days, within [`COMPARE_DAYS`] before `as_of`, of the
//! periods PingOne reported as closed (not `partial`). The producer asks only for days that its
//! activity polling covered completely, so both sides count the same days.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{DAY_MS, ReportRow, TenantData};

/// How far back the comparison looks, in days before `as_of`.
pub const COMPARE_DAYS: i64 = 30;

/// The default `--signon-gap`: flag a difference over 10 % of PingOne's count.
pub const DEFAULT_GAP: f64 = 0.10;

/// One period of PingOne's count of one application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingonePeriod {
    /// End of the period (exclusive), milliseconds since the Unix epoch.
    pub end_ms: i64,
    /// Sign-ons PingOne counted in it.
    pub signons: i64,
    /// Whether the period was still open when read.
    pub partial: bool,
}

/// The comparison of one application (or, summed, of a tenant).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Whole UTC days compared.
    pub days: u32,
    /// Sign-ons derived from audit activities on those days.
    pub ours: u64,
    /// Sign-ons PingOne counted on those days.
    pub pingone: u64,
}

impl Comparison {
    /// `|ours − pingone| / pingone` (over 1 when PingOne counted none).
    pub fn gap(&self) -> f64 {
        let diff = self.ours.abs_diff(self.pingone);
        #[allow(clippy::cast_precision_loss)]
        let share = diff as f64 / self.pingone.max(1) as f64;
        share
    }
}

/// The UTC days `[first, last]` whose accesses the comparison may need, for `as_of_ms`.
pub fn window_days(as_of_ms: i64) -> (i32, i32) {
    let last = i32::try_from((as_of_ms.div_euclid(DAY_MS)) - 1).unwrap_or(i32::MAX);
    (last - i32::try_from(COMPARE_DAYS).unwrap_or(30) + 1, last)
}

/// Compares each application of `data` that PingOne reported counts for.
pub fn compare(data: &TenantData, as_of_ms: i64) -> BTreeMap<String, Comparison> {
    // Our accesses per application and day, from every (application, user) pair: a deleted
    // user's sign-ons were counted by PingOne too.
    let mut ours: HashMap<&str, HashMap<i32, u64>> = HashMap::new();
    for ((app, _), counts) in &data.window_counts {
        let days = ours.entry(app.as_str()).or_default();
        for (day, n) in counts {
            *days.entry(*day).or_default() += u64::from(*n);
        }
    }
    let from = as_of_ms - COMPARE_DAYS * DAY_MS;
    let mut out = BTreeMap::new();
    for (app, periods) in &data.pingone_signons {
        let mut days = BTreeSet::new();
        let mut pingone = 0_u64;
        for (start, p) in periods {
            let whole_days = start.rem_euclid(DAY_MS) == 0 && p.end_ms.rem_euclid(DAY_MS) == 0;
            if p.partial || !whole_days || *start < from || p.end_ms > as_of_ms {
                continue;
            }
            pingone += u64::try_from(p.signons).unwrap_or(0);
            let (first, end) = (start.div_euclid(DAY_MS), p.end_ms.div_euclid(DAY_MS));
            days.extend((first..end).filter_map(|d| i32::try_from(d).ok()));
        }
        if days.is_empty() {
            continue;
        }
        let counted = ours.get(app.as_str());
        let ours = days
            .iter()
            .map(|d| counted.and_then(|c| c.get(d)).copied().unwrap_or(0))
            .sum();
        out.insert(
            app.clone(),
            Comparison {
                days: u32::try_from(days.len()).unwrap_or(u32::MAX),
                ours,
                pingone,
            },
        );
    }
    out
}

/// Sets the sign-on columns of `rows` (one tenant's, tenant row first) from `compared`: each
/// application row PingOne reported counts for, and the tenant row with the sums over them.
pub fn apply(rows: &mut [ReportRow], compared: &BTreeMap<String, Comparison>, gap: f64) {
    let set = |r: &mut ReportRow, c: &Comparison| {
        r.signon_days = Some(c.days);
        r.signons = Some(c.ours);
        r.pingone_signons = Some(c.pingone);
        r.signon_gap = Some(c.gap());
        r.signon_gap_flagged = Some(c.gap() > gap);
    };
    let mut total: Option<Comparison> = None;
    for r in rows.iter_mut() {
        let Some(c) = r.application_id.as_ref().and_then(|id| compared.get(id)) else {
            continue;
        };
        set(r, c);
        let t = total.get_or_insert(Comparison {
            days: 0,
            ours: 0,
            pingone: 0,
        });
        t.days = t.days.max(c.days);
        t.ours += c.ours;
        t.pingone += c.pingone;
    }
    if let (Some(t), Some(tenant_row)) =
        (total, rows.iter_mut().find(|r| r.application_id.is_none()))
    {
        set(tenant_row, &t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AS_OF: i64 = 1_000 * DAY_MS + 3_600_000;

    fn data() -> TenantData {
        let mut t = TenantData::default();
        let period = |day: i64, signons: i64, partial: bool| {
            (
                day * DAY_MS,
                PingonePeriod {
                    end_ms: (day + 1) * DAY_MS,
                    signons,
                    partial,
                },
            )
        };
        // "a": days 998 and 999 closed, day 1000 still open (not compared).
        t.pingone_signons.insert(
            "a".into(),
            BTreeMap::from([
                period(998, 3, false),
                period(999, 2, false),
                period(1000, 9, true),
            ]),
        );
        // "b": PingOne counted 10, the audit shows 7: a 30 % gap.
        t.pingone_signons
            .insert("b".into(), BTreeMap::from([period(999, 10, false)]));
        // "old": only a period older than the comparison window.
        t.pingone_signons
            .insert("old".into(), BTreeMap::from([period(900, 10, false)]));
        t.window_counts
            .insert(("a".into(), "u1".into()), vec![(998, 2), (999, 1)]);
        // A user deleted since still counts: PingOne counted the sign-on too. Day 997 is
        // outside PingOne's periods and is not compared.
        t.window_counts.insert(
            ("a".into(), "gone".into()),
            vec![(997, 5), (998, 1), (999, 1)],
        );
        t.window_counts
            .insert(("b".into(), "u1".into()), vec![(999, 7)]);
        t
    }

    #[test]
    fn compares_closed_whole_days_only() {
        let c = compare(&data(), AS_OF);
        assert_eq!(
            c.get("a"),
            Some(&Comparison {
                days: 2,
                ours: 5,
                pingone: 5
            })
        );
        assert_eq!(c["a"].gap(), 0.0);
        assert_eq!(c["b"].ours, 7);
        assert!((c["b"].gap() - 0.3).abs() < 1e-9);
        assert!(!c.contains_key("old"), "{c:?}");
    }

    #[test]
    fn flags_gaps_over_the_share_and_sums_the_tenant_row() {
        let c = compare(&data(), AS_OF);
        let row = |app: Option<&str>| ReportRow {
            application_id: app.map(str::to_owned),
            ..ReportRow::default()
        };
        let mut rows = vec![row(None), row(Some("a")), row(Some("b")), row(Some("none"))];
        apply(&mut rows, &c, DEFAULT_GAP);
        assert_eq!(rows[1].signon_gap_flagged, Some(false));
        assert_eq!(rows[2].signon_gap_flagged, Some(true));
        assert_eq!(rows[3].signons, None, "no PingOne counts, no comparison");
        assert_eq!(rows[0].signons, Some(12));
        assert_eq!(rows[0].pingone_signons, Some(15));
        assert_eq!(rows[0].signon_gap_flagged, Some(true));
        // A wider tolerance flags nothing.
        apply(&mut rows, &c, 0.5);
        assert_eq!(rows[2].signon_gap_flagged, Some(false));
        assert_eq!(rows[0].signon_gap_flagged, Some(false));
    }

    #[test]
    fn no_count_from_pingone_is_a_full_gap() {
        let c = Comparison {
            days: 1,
            ours: 4,
            pingone: 0,
        };
        assert_eq!(c.gap(), 4.0);
    }
}
