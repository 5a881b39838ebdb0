//! A typed client of the admin API, for tests: mutations, faults and truth dumps.

use serde::Serialize;
use serde_json::{Value, json};

use crate::admin::{SignonCountSpec, SignonSpec};
use crate::error::SimError;
use crate::faults::{FaultProfile, ScheduledFault};

/// The admin API of one tenant.
#[derive(Debug, Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
}

impl AdminClient {
    /// A client for tenant `env_id` of the simulator at `base_url` (accepts self-signed certs).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base_url: &str, env_id: &str) -> Result<Self, SimError> {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| SimError::Admin {
                what: "http client".into(),
                message: e.to_string(),
            })?;
        Ok(Self::with_client(http, base_url, env_id))
    }

    pub(crate) fn with_client(http: reqwest::Client, base_url: &str, env_id: &str) -> Self {
        Self {
            http,
            base: format!(
                "{}/__admin/{}",
                base_url.trim_end_matches('/'),
                env_id.to_ascii_lowercase()
            ),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Option<Value>, SimError> {
        let what = format!("{method} {path}");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| SimError::Admin {
            what: what.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| SimError::Admin {
            what: what.clone(),
            message: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(SimError::Admin {
                what,
                message: format!("{status}: {text}"),
            });
        }
        if text.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| SimError::Admin {
                what,
                message: e.to_string(),
            })
    }

    async fn value(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Value, SimError> {
        Ok(self.call(method, path, body).await?.unwrap_or(Value::Null))
    }

    /// Creates a user from (partial) user JSON with at least `username`; returns it.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn create_user(&self, user: &Value) -> Result<Value, SimError> {
        self.value(reqwest::Method::POST, "/users", Some(user))
            .await
    }

    /// Applies a JSON merge patch to a user; returns it.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer (404 for unknown users).
    pub async fn change_user(&self, id: &str, patch: &Value) -> Result<Value, SimError> {
        self.value(reqwest::Method::PATCH, &format!("/users/{id}"), Some(patch))
            .await
    }

    /// Deletes a user.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn delete_user(&self, id: &str) -> Result<(), SimError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/users/{id}"),
            None::<&Value>,
        )
        .await
        .map(|_| ())
    }

    /// Locks a user.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn lock_user(&self, id: &str) -> Result<Value, SimError> {
        self.value(
            reqwest::Method::POST,
            &format!("/users/{id}/lock"),
            None::<&Value>,
        )
        .await
    }

    /// Unlocks a user.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn unlock_user(&self, id: &str) -> Result<Value, SimError> {
        self.value(
            reqwest::Method::POST,
            &format!("/users/{id}/unlock"),
            None::<&Value>,
        )
        .await
    }

    /// Sets a user's `mfaEnabled`.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn set_mfa(&self, id: &str, enabled: bool) -> Result<Value, SimError> {
        self.value(
            reqwest::Method::PUT,
            &format!("/users/{id}/mfa"),
            Some(&json!({"enabled": enabled})),
        )
        .await
    }

    /// Adds a user to a group.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn add_membership(&self, group_id: &str, user_id: &str) -> Result<(), SimError> {
        self.call(
            reqwest::Method::PUT,
            &format!("/groups/{group_id}/members/{user_id}"),
            None::<&Value>,
        )
        .await
        .map(|_| ())
    }

    /// Removes a user from a group.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn remove_membership(&self, group_id: &str, user_id: &str) -> Result<(), SimError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/groups/{group_id}/members/{user_id}"),
            None::<&Value>,
        )
        .await
        .map(|_| ())
    }

    /// Creates an application from (partial) JSON with at least `name`; returns it.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn create_application(&self, app: &Value) -> Result<Value, SimError> {
        self.value(reqwest::Method::POST, "/applications", Some(app))
            .await
    }

    /// Deletes an application.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn delete_application(&self, id: &str) -> Result<(), SimError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/applications/{id}"),
            None::<&Value>,
        )
        .await
        .map(|_| ())
    }

    /// Appends `USER.ACCESS_ALLOWED` events; returns them as `/activities` will serve them.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn append_signons(&self, signons: &[SignonSpec]) -> Result<Vec<Value>, SimError> {
        let v = self
            .value(reqwest::Method::POST, "/signons", Some(signons))
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Adds sign-ons that only `/applicationSignons` counts (no audit event): a disagreement
    /// between PingOne's count and the activities.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn add_signon_counts(&self, counts: &[SignonCountSpec]) -> Result<(), SimError> {
        self.call(reqwest::Method::POST, "/signon-counts", Some(counts))
            .await
            .map(|_| ())
    }

    /// Replaces the probability fault profile.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn set_faults(&self, profile: &FaultProfile) -> Result<(), SimError> {
        self.call(reqwest::Method::PUT, "/faults", Some(profile))
            .await
            .map(|_| ())
    }

    /// Arms a scheduled fault.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn schedule_fault(&self, fault: &ScheduledFault) -> Result<(), SimError> {
        self.call(reqwest::Method::POST, "/faults/schedule", Some(fault))
            .await
            .map(|_| ())
    }

    /// Clears every fault; returns how many faults fired since the last clear.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn clear_faults(&self) -> Result<u64, SimError> {
        let v = self
            .value(reqwest::Method::DELETE, "/faults", None::<&Value>)
            .await?;
        Ok(v.get("fired_total").and_then(Value::as_u64).unwrap_or(0))
    }

    /// Expires every token of the tenant now.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn expire_tokens(&self) -> Result<u64, SimError> {
        let v = self
            .value(reqwest::Method::POST, "/tokens/expire", None::<&Value>)
            .await?;
        Ok(v.get("expired").and_then(Value::as_u64).unwrap_or(0))
    }

    async fn ndjson(&self, path: &str) -> Result<Vec<Value>, SimError> {
        let what = format!("GET {path}");
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| SimError::Admin {
                what: what.clone(),
                message: e.to_string(),
            })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| SimError::Admin {
            what: what.clone(),
            message: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(SimError::Admin {
                what,
                message: format!("{status}: {text}"),
            });
        }
        text.lines()
            .map(|l| {
                serde_json::from_str(l).map_err(|e| SimError::Admin {
                    what: what.clone(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// Every user as `GET /users` serves it now, in scan order (buffers the whole list: use
    /// [`AdminClient::truth_url`] to stream a big tenant).
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn truth_users(&self) -> Result<Vec<Value>, SimError> {
        self.ndjson("/truth/users").await
    }

    /// Every group.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn truth_groups(&self) -> Result<Vec<Value>, SimError> {
        self.ndjson("/truth/groups").await
    }

    /// Every application.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn truth_applications(&self) -> Result<Vec<Value>, SimError> {
        self.ndjson("/truth/applications").await
    }

    /// Every membership as `{"groupId","userId"}`.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn truth_memberships(&self) -> Result<Vec<Value>, SimError> {
        self.ndjson("/truth/memberships").await
    }

    /// Every activity in `[from, to)` (RFC 3339), newest first, without the 14-day limits.
    ///
    /// # Errors
    /// Transport errors or a non-2xx answer.
    pub async fn truth_activities(&self, from: &str, to: &str) -> Result<Vec<Value>, SimError> {
        self.ndjson(&format!(
            "/truth/activities?from={}&to={}",
            crate::api::encode_query(from),
            crate::api::encode_query(to)
        ))
        .await
    }

    /// The URL of a truth dump (`users`, `groups`, `applications`, `memberships`), to stream.
    #[must_use]
    pub fn truth_url(&self, what: &str) -> String {
        format!("{}/truth/{what}", self.base)
    }
}
