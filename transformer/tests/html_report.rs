//! The HTML license report in a real browser: headless Chromium (Debian's `chromium`, or the
//! binary in `CHROMIUM`) loads the page, runs its script, and the test reads the numbers back
//! from the DOM it dumps: the summary figures, each application's waste, the table sorted by
//! waste by the page's own script, PingOne's sign-on counts and the gap flag. It also takes a screenshot, kept at
//! `target/license-report.png` (the READMEs show the demo's, taken the same way).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use transformer::report::prices::{self, Prices};
use transformer::report::{AppFacts, TenantData, UserFacts, compute, html};

const DAY_MS: i64 = 86_400_000;
const NOW: i64 = 20_400 * DAY_MS;

/// 40 users; "CRM" for group `sales` (10 members), "Chat" and "Wiki" for everyone. Recent use:
/// 6 CRM users, 30 Chat users, 2 Wiki users; older use gives the daily chart some history.
fn tenant() -> TenantData {
    let mut t = TenantData::default();
    for i in 0..40 {
        let groups = if i < 10 {
            vec!["sales".to_owned()]
        } else {
            vec![]
        };
        t.users.insert(
            format!("u{i:02}"),
            UserFacts {
                can_authenticate: Some(true),
                mfa_enabled: Some(i % 3 == 0),
                access_group_ids: groups,
                ..UserFacts::default()
            },
        );
    }
    let app = |name: &str, group: Option<&str>| AppFacts {
        name: Some(name.into()),
        group_type: group.map(|_| "ANY_GROUP".into()),
        group_ids: group.map(|g| vec![g.to_owned()]).unwrap_or_default(),
    };
    t.apps.insert("crm".into(), app("CRM", Some("sales")));
    t.apps.insert("chat".into(), app("Chat", None));
    t.apps.insert("wiki".into(), app("Wiki", None));
    let mut used = |app: &str, users: std::ops::Range<usize>, days_ago: i64| {
        for i in users {
            let pair = (app.to_owned(), format!("u{i:02}"));
            let day = i32::try_from((NOW - days_ago * DAY_MS) / DAY_MS).unwrap();
            t.last_access.insert(pair.clone(), NOW - days_ago * DAY_MS);
            t.usage_days
                .insert(pair, (day - 20..=day).step_by(3).collect());
        }
    };
    used("crm", 0..6, 2);
    used("chat", 0..30, 1);
    used("wiki", 0..2, 5);
    used("wiki", 2..12, 200);
    // PingOne's counts of yesterday: CRM 10 against our 6 accesses (a gap), Chat 30 as ours.
    let yesterday = NOW / DAY_MS - 1;
    for (app, pingone, ours) in [("crm", 10, 6_u32), ("chat", 30, 30)] {
        t.pingone_signons.entry(app.into()).or_default().insert(
            yesterday * DAY_MS,
            transformer::report::signons::PingonePeriod {
                end_ms: NOW - NOW % DAY_MS,
                signons: pingone,
                partial: false,
            },
        );
        t.window_counts.insert(
            (app.into(), "u00".into()),
            vec![(i32::try_from(yesterday).unwrap(), ours)],
        );
    }
    t
}

fn chromium() -> PathBuf {
    let bin = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("chromium"), PathBuf::from);
    let found = Command::new(&bin).arg("--version").output();
    assert!(
        found.as_ref().is_ok_and(|o| o.status.success()),
        "{} not found ({found:?}): install Debian's chromium (`apt-get install chromium`; \
         deploy/local/test does when it can), or set CHROMIUM to a Chromium binary",
        bin.display()
    );
    bin
}

/// Runs headless Chromium on `page` with `args` and returns its stdout.
fn headless(bin: &Path, page: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_html_report_renders_in_chromium_with_its_numbers() {
    let bin = chromium();
    let tenants = BTreeMap::from([("acme".to_owned(), tenant())]);
    let windows = [30, 90];
    let mut rows = compute(&tenants, &windows, NOW);
    let prices = Prices::parse(
        "currency = \"EUR\"\ndefault_price = 4.0\n[[application]]\nname = \"crm\"\n\
         price = 50.0\nseats = 12\n",
    )
    .unwrap();
    prices::apply(&mut rows, &prices, 90);
    let compared = transformer::report::signons::compare(&tenants["acme"], NOW);
    transformer::report::signons::apply(&mut rows, &compared, 0.1);
    let trends = BTreeMap::from([(
        "acme".to_owned(),
        html::daily_active_users(&tenants["acme"], NOW),
    )]);
    let page_html = html::render(&rows, &windows, &trends, NOW);
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&target).unwrap();
    let page = target.join("license-report.html");
    std::fs::write(&page, &page_html).unwrap();

    // CRM: 12 paid seats, 6 active, 50 a month: 300.00. Chat: 40 may use, 30 active, 4 a month:
    // 40.00. Wiki: 40 may use, 2 active in 90 days: 152.00. Tenant: 492.00.
    let dom = headless(&bin, &page, &["--dump-dom"]);
    for (what, needle) in [
        ("the page's script ran", "data-ready=\"true\""),
        ("tenant waste", "id=\"waste-acme\" data-value=\"492.00\""),
        ("users", "id=\"users-acme\" data-value=\"40\""),
        (
            "CRM waste",
            "<td data-col=\"monthly_waste\" data-value=\"300.00\">300.00</td>",
        ),
        (
            "Wiki waste",
            "<td data-col=\"monthly_waste\" data-value=\"152.00\">152.00</td>",
        ),
        (
            "Chat waste",
            "<td data-col=\"monthly_waste\" data-value=\"40.00\">40.00</td>",
        ),
        (
            "apps with a sign-on gap",
            "id=\"signon-gaps-acme\" data-value=\"1\"",
        ),
        (
            "PingOne's CRM count",
            "<td data-col=\"pingone_signons\" data-value=\"10\">10</td>",
        ),
        (
            "CRM's gap",
            "<td data-col=\"signon_gap_pct\" data-value=\"40.0\">40.0</td><td data-col=\"signon_gap_flag\" data-value=\"GAP\">GAP</td>",
        ),
    ] {
        assert!(dom.contains(needle), "{what}: {needle:?} not in the DOM");
    }
    // The script sorted the table by waste, largest first (the tenant row holds the sum).
    let order: Vec<&str> = dom
        .split("<tr data-app=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    assert_eq!(
        order,
        ["*", "crm", "wiki", "chat"],
        "rows after the page's sort"
    );
    assert_eq!(dom.matches("<svg").count(), 3, "three charts");

    let shot = target.join("license-report.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        &bin,
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1100,940",
        ],
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot of {} bytes",
        png.len()
    );
}
