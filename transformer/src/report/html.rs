//! `license-report --format html`: the report as one self-contained HTML file, for people who
//! would rather look at a chart than read a table. Inline CSS, inline SVG charts and a few lines
//! of inline JavaScript; nothing is fetched from the network.
//!
//! Per tenant: summary figures; a bar chart of the monthly waste by application (with
//! `--prices`; without, of the unused seats); a stacked bar chart of active against inactive users
//! per application (widest window); a chart of active users per day, from the app usage records'
//! day buckets; and the report's table, sortable by clicking a column header (sorted by waste,
//! else by inactive users, when the page loads). Every number cell carries `data-col` and
//! `data-value`, so that tests (and scripts) can read the numbers from the DOM.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use schemas::time::format_ms;

use super::{DAY_MS, ReportRow, TenantData};

/// Days shown in the active-users chart, ending with the report's day.
pub const TREND_DAYS: i32 = 90;

/// Distinct users with at least one access per UTC day, over the [`TREND_DAYS`] days ending on
/// `as_of_ms`'s day, from the day buckets of the tenant's app usage records (a user using two
/// applications on one day counts once). Days without access are 0.
pub fn daily_active_users(data: &TenantData, as_of_ms: i64) -> BTreeMap<i32, u64> {
    let last = i32::try_from(as_of_ms.div_euclid(DAY_MS)).unwrap_or(i32::MAX);
    let first = last - TREND_DAYS + 1;
    let mut days_of_user: HashMap<&str, Vec<i32>> = HashMap::new();
    for ((app, user), days) in &data.usage_days {
        if !data.users.contains_key(user) || !data.apps.contains_key(app) {
            continue;
        }
        days_of_user
            .entry(user.as_str())
            .or_default()
            .extend(days.iter().filter(|d| (first..=last).contains(*d)));
    }
    let mut out: BTreeMap<i32, u64> = (first..=last).map(|d| (d, 0)).collect();
    for days in days_of_user.values_mut() {
        days.sort_unstable();
        days.dedup();
        for d in days.iter() {
            *out.entry(*d).or_default() += 1;
        }
    }
    out
}

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The label of a row's application.
fn app_label(r: &ReportRow) -> String {
    r.application_name
        .clone()
        .or_else(|| r.application_id.clone())
        .unwrap_or_else(|| "all applications".into())
}

const BAR_WIDTH: f64 = 420.0;
const LABEL_WIDTH: f64 = 220.0;
const ROW_HEIGHT: f64 = 22.0;

/// Opens a captioned figure with an SVG canvas of `width` × `height`; close with
/// `</svg></figure>`.
fn figure(title: &str, width: f64, height: f64) -> String {
    format!(
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" \
         role=\"img\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">",
        esc(title)
    )
}

/// A horizontal bar chart: one bar per `(label, value, text)`, scaled to the largest value.
fn bar_chart(title: &str, items: &[(String, f64, String)], color: &str) -> String {
    let max = items.iter().map(|i| i.1).fold(0.0_f64, f64::max);
    let height = ROW_HEIGHT * items.len().max(1) as f64 + 10.0;
    let mut svg = figure(title, LABEL_WIDTH + BAR_WIDTH + 90.0, height);
    for (i, (label, value, text)) in items.iter().enumerate() {
        let y = ROW_HEIGHT * i as f64 + 4.0;
        let len = if max > 0.0 {
            BAR_WIDTH * value / max
        } else {
            0.0
        };
        let _ = write!(
            svg,
            "<text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{label}</text>\
             <rect x=\"{LABEL_WIDTH}\" y=\"{y}\" width=\"{len:.1}\" height=\"16\" fill=\"{color}\">\
             <title>{label}: {text}</title></rect>\
             <text x=\"{vx:.1}\" y=\"{ty}\">{text}</text>",
            lx = LABEL_WIDTH - 6.0,
            ty = y + 12.5,
            label = esc(label),
            text = esc(text),
            vx = LABEL_WIDTH + len + 4.0,
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// Stacked bars of active (blue) and inactive (grey) users per application.
fn active_chart(title: &str, items: &[(String, u64, u64)]) -> String {
    let max = items.iter().map(|i| i.1 + i.2).max().unwrap_or(0) as f64;
    let height = ROW_HEIGHT * items.len().max(1) as f64 + 30.0;
    let mut svg = figure(title, LABEL_WIDTH + BAR_WIDTH + 120.0, height);
    for (i, (label, active, inactive)) in items.iter().enumerate() {
        let y = ROW_HEIGHT * i as f64 + 4.0;
        let scale = |n: u64| {
            if max > 0.0 {
                BAR_WIDTH * n as f64 / max
            } else {
                0.0
            }
        };
        let (a, n) = (scale(*active), scale(*inactive));
        let _ = write!(
            svg,
            "<text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{label}</text>\
             <rect x=\"{LABEL_WIDTH}\" y=\"{y}\" width=\"{a:.1}\" height=\"16\" fill=\"#2563eb\">\
             <title>{label}: {active} active</title></rect>\
             <rect x=\"{nx:.1}\" y=\"{y}\" width=\"{n:.1}\" height=\"16\" fill=\"#cbd5e1\">\
             <title>{label}: {inactive} inactive</title></rect>\
             <text x=\"{vx:.1}\" y=\"{ty}\">{active} / {inactive}</text>",
            lx = LABEL_WIDTH - 6.0,
            ty = y + 12.5,
            label = esc(label),
            nx = LABEL_WIDTH + a,
            vx = LABEL_WIDTH + a + n + 4.0,
        );
    }
    let ly = ROW_HEIGHT * items.len().max(1) as f64 + 20.0;
    let _ = write!(
        svg,
        "<rect x=\"{LABEL_WIDTH}\" y=\"{y}\" width=\"12\" height=\"12\" fill=\"#2563eb\"/>\
         <text x=\"{t1}\" y=\"{ly}\">active</text>\
         <rect x=\"{x2}\" y=\"{y}\" width=\"12\" height=\"12\" fill=\"#cbd5e1\"/>\
         <text x=\"{t2}\" y=\"{ly}\">inactive</text></svg></figure>",
        y = ly - 10.0,
        t1 = LABEL_WIDTH + 16.0,
        x2 = LABEL_WIDTH + 80.0,
        t2 = LABEL_WIDTH + 96.0,
    );
    svg
}

/// Active users per day as columns, with the first and last day and the peak labelled.
fn trend_chart(days: &BTreeMap<i32, u64>) -> String {
    let (w, h, pad) = (720.0, 180.0, 30.0);
    let max = days.values().copied().max().unwrap_or(0).max(1) as f64;
    let step = (w - 2.0 * pad) / days.len().max(1) as f64;
    let mut svg = figure(
        &format!("Active users per day (last {TREND_DAYS} days)"),
        w,
        h,
    );
    let _ = write!(
        svg,
        "<line x1=\"{pad}\" y1=\"{base}\" x2=\"{x2}\" y2=\"{base}\" stroke=\"#64748b\"/>\
         <text x=\"{pad}\" y=\"12\">{max}</text>",
        base = h - pad,
        x2 = w - pad,
        max = max as u64,
    );
    for (i, (day, n)) in days.iter().enumerate() {
        let bh = (h - 2.0 * pad) * *n as f64 / max;
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\" fill=\"#0d9488\">\
             <title>{date}: {n}</title></rect>",
            x = pad + step * i as f64,
            y = h - pad - bh,
            bw = (step - 1.0).max(1.0),
            date = &format_ms(i64::from(*day) * DAY_MS)[..10],
        );
    }
    if let (Some(first), Some(last)) = (days.keys().next(), days.keys().last()) {
        let _ = write!(
            svg,
            "<text x=\"{pad}\" y=\"{ty}\">{a}</text><text x=\"{x2}\" y=\"{ty}\" \
             text-anchor=\"end\">{b}</text>",
            ty = h - 8.0,
            x2 = w - pad,
            a = &format_ms(i64::from(*first) * DAY_MS)[..10],
            b = &format_ms(i64::from(*last) * DAY_MS)[..10],
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#0f172a}\
h1{font-size:22px}h2{font-size:18px;margin-top:32px}\
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #e2e8f0;border-radius:8px;\
padding:10px 14px}.card b{display:block;font-size:20px}\
figure{margin:16px 0}figcaption{font-weight:600;margin-bottom:4px}svg text{font-size:12px}\
table{border-collapse:collapse;margin-top:12px}th,td{border-bottom:1px solid #e2e8f0;\
padding:4px 8px;text-align:right}th{cursor:pointer;background:#f8fafc}\
td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}";

/// Sorts a table by a column's `data-value` when its header is clicked (again: reversed), and
/// each table by its `data-sort` column, descending, when the page loads.
const SCRIPT: &str = "function sortBy(table,col,desc){const body=table.tBodies[0];\
const rows=[...body.rows];const v=r=>{const c=r.querySelector('[data-col=\"'+col+'\"]');\
const x=c?c.dataset.value:'';const n=parseFloat(x);return isNaN(n)?x:n};\
rows.sort((a,b)=>{const x=v(a),y=v(b);const o=x<y?-1:x>y?1:0;return desc?-o:o});\
rows.forEach(r=>body.appendChild(r));table.dataset.sortedBy=col;}\
document.querySelectorAll('table.report').forEach(t=>{\
t.querySelectorAll('th').forEach(th=>th.addEventListener('click',()=>{\
const desc=t.dataset.sortedBy===th.dataset.col?t.dataset.desc!=='true':true;\
t.dataset.desc=desc;sortBy(t,th.dataset.col,desc)}));\
sortBy(t,t.dataset.sort,true);t.dataset.desc='true';t.dataset.ready='true'});";

/// The whole HTML document. `trends` holds each tenant's active users per day
/// ([`daily_active_users`]).
pub fn render(
    rows: &[ReportRow],
    windows: &[u32],
    trends: &BTreeMap<String, BTreeMap<i32, u64>>,
    as_of_ms: i64,
) -> String {
    let widest = windows.iter().copied().max().unwrap_or(0);
    let priced = rows.iter().any(|r| r.currency.is_some());
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>License report {as_of}</title><style>{STYLE}</style></head><body>\
         <h1>License report</h1><p>As of {as_of}; active means an access within the last \
         {widest} days.</p>",
        as_of = esc(&format_ms(as_of_ms)),
    );
    let mut tenants: Vec<&str> = rows.iter().map(|r| r.tenant_id.as_str()).collect();
    tenants.dedup();
    for tenant in tenants {
        let of_tenant: Vec<&ReportRow> = rows.iter().filter(|r| r.tenant_id == tenant).collect();
        let apps: Vec<&&ReportRow> = of_tenant
            .iter()
            .filter(|r| r.application_id.is_some())
            .collect();
        let t = esc(tenant);
        let _ = write!(
            html,
            "<section id=\"tenant-{t}\"><h2>Tenant {t}</h2><div class=\"cards\">"
        );
        if let Some(total) = of_tenant.iter().find(|r| r.application_id.is_none()) {
            let active = total.active_last_days.get(&widest).copied().unwrap_or(0);
            let mut card = |id: &str, label: &str, value: String| {
                let _ = write!(
                    html,
                    "<div class=\"card\"><b id=\"{id}-{t}\" data-value=\"{v}\">{v}</b>{label}</div>",
                    v = esc(&value)
                );
            };
            card("users", "users", total.may_use.to_string());
            card(
                "active",
                &format!("active in {widest} days"),
                active.to_string(),
            );
            card(
                "never-used",
                "never used an application",
                total.never_used.to_string(),
            );
            card(
                "reclaim-first",
                "inactive but can authenticate",
                total.inactive_can_authenticate.to_string(),
            );
            if let (Some(waste), Some(currency)) = (total.monthly_waste, &total.currency) {
                card(
                    "waste",
                    &format!("{currency} wasted per month"),
                    format!("{waste:.2}"),
                );
            }
            if let Some(days) = total.signon_days {
                let gaps = apps
                    .iter()
                    .filter(|r| r.signon_gap_flagged == Some(true))
                    .count();
                card(
                    "signon-gaps",
                    &format!("apps whose sign-ons over {days} days differ from PingOne's count"),
                    gaps.to_string(),
                );
            }
        }
        html.push_str("</div>");
        let mut by_waste: Vec<(String, f64, String)> = apps
            .iter()
            .map(|r| {
                if priced {
                    let w = r.monthly_waste.unwrap_or(0.0);
                    let cur = r.currency.clone().unwrap_or_default();
                    (app_label(r), w, format!("{w:.2} {cur}"))
                } else {
                    let active = r.active_last_days.get(&widest).copied().unwrap_or(0);
                    let unused = r.may_use.saturating_sub(active);
                    (app_label(r), unused as f64, unused.to_string())
                }
            })
            .collect();
        by_waste.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        by_waste.truncate(15);
        html.push_str(&bar_chart(
            if priced {
                "Monthly waste by application (top 15)"
            } else {
                "Users without an access in the window, by application (top 15)"
            },
            &by_waste,
            "#dc2626",
        ));
        let mut split: Vec<(String, u64, u64)> = apps
            .iter()
            .map(|r| {
                let active = r.active_last_days.get(&widest).copied().unwrap_or(0);
                (app_label(r), active, r.may_use.saturating_sub(active))
            })
            .collect();
        split.sort_by(|a, b| (b.1 + b.2).cmp(&(a.1 + a.2)).then(a.0.cmp(&b.0)));
        split.truncate(15);
        html.push_str(&active_chart(
            &format!("Active and inactive users by application ({widest} days, top 15)"),
            &split,
        ));
        if let Some(days) = trends.get(tenant) {
            html.push_str(&trend_chart(days));
        }
        html.push_str(&table(&of_tenant, windows));
        html.push_str("</section>");
    }
    let _ = writeln!(html, "<script>{SCRIPT}</script></body></html>");
    html
}

/// The report's rows of one tenant as a sortable table: the columns of the text formats
/// ([`super::number_columns`]), each cell with `data-col` and `data-value`.
fn table(rows: &[&ReportRow], windows: &[u32]) -> String {
    let with = super::Columns::of(rows.iter().copied());
    let mut cols: Vec<String> = vec!["application".into(), "application_id".into()];
    cols.extend(super::number_columns(windows, with));
    let sort = if with.priced {
        "monthly_waste"
    } else {
        "never_used"
    };
    let mut html = format!("<table class=\"report\" data-sort=\"{sort}\"><thead><tr>");
    for col in &cols {
        let label = match col.as_str() {
            "application_id" => "id".to_owned(),
            other => other.replace('_', " "),
        };
        let _ = write!(html, "<th data-col=\"{col}\">{}</th>", esc(&label));
    }
    html.push_str("</tr></thead><tbody>");
    for r in rows {
        let mut cells = vec![
            app_label(r),
            r.application_id.clone().unwrap_or_else(|| "*".into()),
        ];
        cells.extend(super::number_cells(r, windows, with));
        let id = esc(r.application_id.as_deref().unwrap_or("*"));
        let _ = write!(html, "<tr data-app=\"{id}\">");
        for (col, cell) in cols.iter().zip(&cells) {
            let v = esc(cell);
            let _ = write!(html, "<td data-col=\"{col}\" data-value=\"{v}\">{v}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(app: Option<&str>, may_use: u64, active: u64, waste: Option<f64>) -> ReportRow {
        ReportRow {
            tenant_id: "acme".into(),
            application_id: app.map(str::to_owned),
            application_name: app.map(|a| format!("<{a}>")),
            may_use,
            active_last_days: BTreeMap::from([(90, active)]),
            monthly_waste: waste,
            currency: waste.map(|_| "EUR".into()),
            ..ReportRow::default()
        }
    }

    #[test]
    fn one_self_contained_page_with_charts_and_numbers() {
        let rows = vec![
            row(None, 10, 4, Some(30.0)),
            row(Some("a"), 10, 4, Some(25.5)),
            row(Some("b"), 3, 0, Some(4.5)),
        ];
        let trends = BTreeMap::from([(
            "acme".to_owned(),
            BTreeMap::from([(20_000, 3), (20_001, 5)]),
        )]);
        let html = render(&rows, &[90], &trends, 20_001 * DAY_MS);
        assert!(html.starts_with("<!doctype html>"));
        // No fetch of anything: no src, href or url( anywhere; SVG namespaces only.
        for banned in ["src=", "href=", "url(", "@import"] {
            assert!(!html.contains(banned), "{banned}");
        }
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains("id=\"waste-acme\" data-value=\"30.00\""));
        assert!(html.contains("<td data-col=\"monthly_waste\" data-value=\"25.50\">"));
        // Names are escaped.
        assert!(html.contains("&lt;a&gt;") && !html.contains("<a>"));
        assert!(html.contains("<title>2024-10-05: 5</title>"), "{html}");
    }

    #[test]
    fn daily_active_users_counts_each_user_once_a_day() {
        let mut t = TenantData::default();
        for u in ["u1", "u2"] {
            t.users.insert(u.into(), super::super::UserFacts::default());
        }
        for a in ["a", "b"] {
            t.apps.insert(a.into(), super::super::AppFacts::default());
        }
        t.usage_days
            .insert(("a".into(), "u1".into()), vec![100, 101]);
        t.usage_days.insert(("b".into(), "u1".into()), vec![101]);
        t.usage_days.insert(("b".into(), "u2".into()), vec![101, 5]);
        // A deleted user's usage does not count.
        t.usage_days.insert(("a".into(), "gone".into()), vec![101]);
        let days = daily_active_users(&t, 101 * DAY_MS + 5);
        assert_eq!(days.len(), TREND_DAYS as usize);
        assert_eq!(days[&100], 1);
        assert_eq!(days[&101], 2);
        assert!(!days.contains_key(&5));
    }
}
