//! Incremental activity polling of one tenant.
//!
//! Windows run from the checkpoint to now minus a safety lag (PingOne's search index lags), each
//! at most `activity_window_max` (≤ 14 days). Each window is queried once per action type
//! (PingOne allows one `action.type eq` per filter), every page is read, and the window's events
//! plus the new checkpoint become one unit of the partition's writer (one Kafka transaction). A
//! window whose events would exceed [`WINDOW_MAX_BYTES`] is read again as two halves, so that
//! memory stays bounded however busy the tenant. Each query starts `activity_overlap`
//! before the window so that nothing at a boundary is lost; activities seen in that overlap are
//! remembered in the checkpoint by id and dropped when read again.
//!
//! Once caught up, it also reads PingOne's own sign-on counts per application
//! (`/applicationSignons`, one period per whole UTC day the polling covered, at most
//! `application_signons_days`) and writes them, with the checkpoint, in one transaction when
//! they changed since the last read: the license report compares them with the counts derived
//! from the activities of the same days.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::checkpoint::{self, ActivityCheckpoint, CHECKPOINT_VERSION, activity_key};
use crate::kafka::{EncodedEvent, Sent};
use crate::pingone::page::{item_id, item_recorded_at};
use crate::stream::{StreamContext, StreamError};
use schemas::raw::kind;
use schemas::time::{format_ms, now_ms, parse_rfc3339_ms};
use serde_json::value::RawValue;

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// Most bytes of encoded activities one window may hold before it is split in two.
pub const WINDOW_MAX_BYTES: usize = 8 << 20;

/// Shortest window a split makes: a busier second is written whole.
const MIN_WINDOW_MS: i64 = 1_000;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The activity stream of a tenant.
#[derive(Debug)]
pub struct ActivityStream {
    ctx: StreamContext,
    checkpoint: ActivityCheckpoint,
    key: String,
}

/// What one window (or a catch-up) wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowOutcome {
    /// Activities written.
    pub written: u64,
    /// Activities dropped as already written.
    pub duplicates: u64,
    /// Applications whose PingOne sign-on counts were written.
    pub signon_counts: u64,
}

impl ActivityStream {
    /// Takes the committed checkpoint from the partition's writer; without one, polling starts
    /// `activity_initial_lookback` ago.
    pub fn open(ctx: StreamContext) -> Self {
        let key = activity_key(&ctx.tenant.tenant_id);
        let stored = ctx.stored_checkpoint(&key);
        let env = ctx.tenant.environment_id.to_string();
        let fresh = || ActivityCheckpoint {
            version: CHECKPOINT_VERSION,
            environment_id: env.clone(),
            window_end_ms: now_ms()
                - millis(ctx.tenant.activity_initial_lookback).min(
                    millis(crate::config::MAX_ACTIVITY_WINDOW_S_DURATION)
                        - millis(ctx.tenant.activity_overlap)
                        - 120_000,
                ),
            overlap_ids: BTreeSet::new(),
            covered_from_ms: None,
            signons_sha256: None,
        };
        let mut checkpoint = match stored.map(|b| checkpoint::decode::<ActivityCheckpoint>(&b)) {
            None => fresh(),
            Some(Ok(c)) if c.environment_id == env => c,
            Some(Ok(_)) => {
                tracing::warn!(tenant = %ctx.tenant.tenant_id, "activity checkpoint belongs to another environment, starting afresh");
                fresh()
            }
            Some(Err(reason)) => {
                ctx.metrics.error(&ctx.tenant.tenant_id, "checkpoint");
                tracing::error!(tenant = %ctx.tenant.tenant_id, %reason, "unreadable activity checkpoint, starting afresh");
                fresh()
            }
        };
        // A fresh start, or a checkpoint from before coverage was recorded: complete from here.
        checkpoint
            .covered_from_ms
            .get_or_insert(checkpoint.window_end_ms);
        tracing::info!(tenant = %ctx.tenant.tenant_id, from = %format_ms(checkpoint.window_end_ms), "activity polling position");
        Self {
            ctx,
            checkpoint,
            key,
        }
    }

    /// The committed position: everything recorded before it was written.
    pub fn position_ms(&self) -> i64 {
        self.checkpoint.window_end_ms
    }

    /// Polls until shutdown.
    ///
    /// # Errors
    /// The first failure; the caller reopens the stream after a backoff.
    pub async fn run(&mut self) -> Result<(), StreamError> {
        loop {
            self.catch_up().await?;
            self.ctx.metrics.stream_succeeded(
                &self.ctx.tenant.tenant_id,
                "activity",
                now_ms() as f64 / 1000.0,
            );
            self.ctx
                .sleep(self.ctx.tenant.activity_poll_interval)
                .await?;
        }
    }

    /// Reads every window up to now minus the safety lag.
    ///
    /// # Errors
    /// [`StreamError`].
    pub async fn catch_up(&mut self) -> Result<WindowOutcome, StreamError> {
        let mut total = WindowOutcome::default();
        // The target is fixed once per call: recomputing it after every window would chase the
        // clock with ever smaller windows and never return to the poll interval's sleep.
        let now = now_ms();
        let target = now - millis(self.ctx.tenant.activity_safety_lag);
        // Halved when a window holds too much, doubled back after each window that fits.
        let max_span = millis(self.ctx.tenant.activity_window_max);
        let mut span = max_span;
        loop {
            if self.ctx.cancel.is_cancelled() {
                return Err(StreamError::Cancelled);
            }
            let mut from = self.checkpoint.window_end_ms;
            if from >= target {
                total.signon_counts = self.refresh_signons().await?;
                tracing::info!(
                    tenant = %self.ctx.tenant.tenant_id,
                    position = %format_ms(self.checkpoint.window_end_ms),
                    written = total.written, duplicates = total.duplicates,
                    signon_counts = total.signon_counts, "activity poll caught up"
                );
                return Ok(total);
            }
            // PingOne serves only the last 14 days (older needs an activity restore): a position
            // older than that cannot be read, which is reported, never skipped quietly.
            let oldest = now - millis(crate::config::MAX_ACTIVITY_WINDOW_S_DURATION)
                + millis(self.ctx.tenant.activity_overlap)
                + 60_000;
            if from < oldest {
                self.ctx
                    .metrics
                    .error(&self.ctx.tenant.tenant_id, "activity_gap");
                tracing::error!(
                    tenant = %self.ctx.tenant.tenant_id, from = %format_ms(from), served_from = %format_ms(oldest),
                    "activity older than pingone's 14-day limit cannot be read; a restore is needed for the gap"
                );
                from = oldest;
                // Days before the gap are no longer complete: their sign-on counts are not compared.
                self.checkpoint.covered_from_ms = Some(oldest);
            }
            let to = target.min(from.saturating_add(span));
            let Some(outcome) = self.window(from, to, to - from <= MIN_WINDOW_MS).await? else {
                span = ((to - from) / 2).max(MIN_WINDOW_MS);
                tracing::info!(tenant = %self.ctx.tenant.tenant_id, from = %format_ms(from),
                    span_ms = span, "activity window over the memory bound, read again in halves");
                continue;
            };
            span = span.saturating_mul(2).min(max_span);
            total.written += outcome.written;
            total.duplicates += outcome.duplicates;
        }
    }

    /// Reads the window `[from, to)` and commits it; `None` when its events would exceed
    /// [`WINDOW_MAX_BYTES`] (nothing written) unless `whole`.
    async fn window(
        &mut self,
        from: i64,
        to: i64,
        whole: bool,
    ) -> Result<Option<WindowOutcome>, StreamError> {
        let tenant = self.ctx.tenant.tenant_id.clone();
        let overlap = millis(self.ctx.tenant.activity_overlap);
        let mut read = WindowRead {
            query_from: from - overlap,
            to,
            tail_from: to - overlap,
            limit: if whole { usize::MAX } else { WINDOW_MAX_BYTES },
            bytes: 0,
            events: Vec::new(),
            new_overlap: BTreeSet::new(),
            outcome: WindowOutcome::default(),
            oversized: 0,
        };
        if !self.read_window(&mut read).await? {
            return Ok(None);
        }
        let checkpoint = ActivityCheckpoint {
            version: CHECKPOINT_VERSION,
            environment_id: self.checkpoint.environment_id.clone(),
            window_end_ms: to,
            overlap_ids: read.new_overlap,
            covered_from_ms: self.checkpoint.covered_from_ms,
            signons_sha256: self.checkpoint.signons_sha256.clone(),
        };
        let value =
            serde_json::to_vec(&checkpoint).map_err(|e| StreamError::Task(e.to_string()))?;
        self.ctx
            .commit("activity", read.events, &self.key, value, None)
            .await?;
        let outcome = read.outcome;
        if outcome.written > 0 {
            self.ctx
                .metrics
                .entities(&tenant, kind::ACTIVITY, outcome.written);
        }
        for _ in 0..read.oversized {
            self.ctx.metrics.oversized(&tenant, kind::ACTIVITY);
        }
        self.ctx
            .metrics
            .stream_succeeded(&tenant, "activity", now_ms() as f64 / 1000.0);
        self.checkpoint = checkpoint;
        tracing::info!(
            tenant = %tenant, from = %format_ms(from), to = %format_ms(to),
            written = outcome.written, duplicates = outcome.duplicates, "activity window committed"
        );
        Ok(Some(outcome))
    }

    /// Reads every page of the window into `read`; `false` as soon as its events pass
    /// `read.limit`.
    async fn read_window(&mut self, read: &mut WindowRead) -> Result<bool, StreamError> {
        let tenant = self.ctx.tenant.tenant_id.clone();
        let action_types = self.ctx.tenant.activity_action_types.clone();
        for action in &action_types {
            let filter = format!(
                "recordedat gt \"{}\" and recordedat lt \"{}\" and action.type eq \"{}\"",
                format_ms(read.query_from),
                format_ms(read.to),
                action
            );
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("limit", &self.ctx.tenant.activity_page_size.to_string())
                .append_pair("filter", &filter)
                .finish();
            let mut url = Some(format!(
                "{}?{query}",
                self.ctx.tenant.collection_url("activities")
            ));
            while let Some(current) = url.take() {
                if self.ctx.cancel.is_cancelled() {
                    return Err(StreamError::Cancelled);
                }
                let page = self.ctx.client.get_page(&current, "activities").await?;
                let observed_at_ms = now_ms();
                for item in &page.items {
                    let id = item_id(item);
                    let recorded = item_recorded_at(item).and_then(|s| parse_rfc3339_ms(&s));
                    if let Some(id) = &id {
                        if recorded.is_some_and(|r| r >= read.tail_from) {
                            read.new_overlap.insert(id.clone());
                        }
                        if self.checkpoint.overlap_ids.contains(id) {
                            read.outcome.duplicates += 1;
                            continue;
                        }
                    } else {
                        self.ctx.metrics.error(&tenant, "missing_id");
                        tracing::warn!(tenant = %tenant, "activity without id, written with a null entity_id");
                    }
                    if recorded.is_none() {
                        self.ctx.metrics.error(&tenant, "missing_recorded_at");
                    }
                    let event = self.ctx.event(
                        kind::ACTIVITY,
                        id,
                        None,
                        observed_at_ms,
                        item.get().to_owned(),
                    );
                    let (record, sent) = self.ctx.encode(&event)?;
                    if let Sent::Oversized(info) = sent {
                        tracing::warn!(
                            tenant = %tenant, entity_id = %info.entity_id, size = info.size,
                            limit = info.limit, "activity over the record limit, written as an oversized marker"
                        );
                        read.oversized += 1;
                    }
                    read.bytes += record.len();
                    read.events.push(record);
                    read.outcome.written += 1;
                    if read.bytes > read.limit {
                        return Ok(false);
                    }
                }
                url = page.next;
            }
        }
        Ok(true)
    }

    /// The whole UTC days `[start, end)` whose sign-on counts to read: complete days after
    /// `covered_from_ms` and before the polling position, at most `application_signons_days`.
    fn signon_days(&self) -> Option<(i64, i64)> {
        let days = i64::from(self.ctx.tenant.application_signons_days);
        let end = self.checkpoint.window_end_ms.div_euclid(DAY_MS) * DAY_MS;
        let covered = self
            .checkpoint
            .covered_from_ms
            .unwrap_or(self.checkpoint.window_end_ms);
        let first_whole = covered.div_euclid(DAY_MS) * DAY_MS
            + if covered.rem_euclid(DAY_MS) == 0 {
                0
            } else {
                DAY_MS
            };
        let start = first_whole.max(end - days * DAY_MS);
        (days > 0 && start < end).then_some((start, end))
    }

    /// Reads PingOne's sign-on counts of [`Self::signon_days`] and writes one
    /// `application_signons` event per application, with the checkpoint, in one transaction,
    /// unless they are what was last written. A PingOne failure is counted
    /// (`errors{kind="application_signons"}`) and logged, and the counts are tried again at the
    /// next poll: they are a cross-check, and must not hold up the activities.
    ///
    /// # Errors
    /// Kafka failures and shutdown.
    async fn refresh_signons(&mut self) -> Result<u64, StreamError> {
        let Some((start, end)) = self.signon_days() else {
            return Ok(0);
        };
        let tenant = self.ctx.tenant.tenant_id.clone();
        let count = (end - start) / DAY_MS;
        // PingOne refuses samplePeriod × samplePeriodCount × limit over 100,000.
        let limit = (100_000 / (24 * count)).clamp(1, 100);
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("filter", &format!("occurredAt ge \"{}\"", format_ms(start)))
            .append_pair("samplePeriod", "24")
            .append_pair("samplePeriodCount", &count.to_string())
            .append_pair("limit", &limit.to_string())
            .finish();
        let mut url = Some(format!(
            "{}?{query}",
            self.ctx.tenant.collection_url("applicationSignons")
        ));
        let mut items = Vec::new();
        while let Some(current) = url.take() {
            if self.ctx.cancel.is_cancelled() {
                return Err(StreamError::Cancelled);
            }
            match self
                .ctx
                .client
                .get_page(&current, "applicationSignons")
                .await
            {
                Ok(page) => {
                    items.extend(page.items);
                    url = page.next;
                }
                Err(e) => {
                    let e = StreamError::from(e);
                    if e.is_cancelled() {
                        return Err(e);
                    }
                    self.ctx.metrics.error(&tenant, "application_signons");
                    tracing::warn!(tenant = %tenant, error = %e, "pingone's sign-on counts could not be read; trying again at the next poll");
                    return Ok(0);
                }
            }
        }
        let mut hashed = format!("{start}/{end}\n").into_bytes();
        for item in &items {
            hashed.extend_from_slice(item.get().as_bytes());
            hashed.push(b'\n');
        }
        let digest = schemas::raw::sha256_hex(&hashed);
        if self.checkpoint.signons_sha256.as_deref() == Some(digest.as_str()) {
            return Ok(0);
        }
        let observed_at_ms = now_ms();
        let mut oversized = 0;
        let mut written = 0;
        let mut events = Vec::with_capacity(items.len());
        for item in &items {
            let id = item_id(item).or_else(|| application_id(item));
            if id.is_none() {
                self.ctx.metrics.error(&tenant, "missing_id");
                tracing::warn!(tenant = %tenant, "sign-on counts without an application id, written with a null entity_id");
            }
            let event = self.ctx.event(
                kind::APPLICATION_SIGNONS,
                id,
                None,
                observed_at_ms,
                item.get().to_owned(),
            );
            let (record, sent) = self.ctx.encode(&event)?;
            if matches!(sent, Sent::Oversized(_)) {
                oversized += 1;
            }
            events.push(record);
            written += 1;
        }
        let checkpoint = ActivityCheckpoint {
            signons_sha256: Some(digest),
            ..self.checkpoint.clone()
        };
        let value =
            serde_json::to_vec(&checkpoint).map_err(|e| StreamError::Task(e.to_string()))?;
        self.ctx
            .commit("activity", events, &self.key, value, None)
            .await?;
        self.ctx
            .metrics
            .entities(&tenant, kind::APPLICATION_SIGNONS, written);
        for _ in 0..oversized {
            self.ctx
                .metrics
                .oversized(&tenant, kind::APPLICATION_SIGNONS);
        }
        self.checkpoint = checkpoint;
        tracing::info!(
            tenant = %tenant, from = %format_ms(start), to = %format_ms(end),
            applications = written, "pingone sign-on counts committed"
        );
        Ok(written)
    }
}

/// A window being read: its bounds, and what it holds so far.
struct WindowRead {
    query_from: i64,
    to: i64,
    tail_from: i64,
    limit: usize,
    bytes: usize,
    events: Vec<EncodedEvent>,
    new_overlap: BTreeSet<String>,
    outcome: WindowOutcome,
    oversized: u64,
}

/// `application.id` of an `/applicationSignons` element that has no top-level `id`.
fn application_id(item: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Item {
        application: Option<Id>,
    }
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<String>,
    }
    serde_json::from_str::<Item>(item.get())
        .ok()
        .and_then(|i| i.application)
        .and_then(|a| a.id)
}
