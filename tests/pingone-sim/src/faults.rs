//! Fault injection per tenant: by probability (seeded, reproducible) or by schedule
//! ("fail the 3rd page of the next users scan").

use serde::{Deserialize, Serialize};

use crate::rng;

/// Which kind of request a scheduled fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// `POST /{envId}/as/token`.
    Token,
    /// `GET /users` (including filtered scans such as `memberOfGroups`).
    Users,
    /// `GET /users/{id}` and `/users/{id}/memberOfGroups`.
    User,
    /// `GET /groups`.
    Groups,
    /// `GET /applications`.
    Applications,
    /// `GET` or `POST /activities`.
    Activities,
    /// `GET /applicationSignons`.
    ApplicationSignons,
    /// Any API route except the token endpoint.
    Api,
}

impl Route {
    /// Whether a schedule for `self` applies to a request of route `actual`.
    #[must_use]
    pub fn matches(self, actual: Route) -> bool {
        self == actual || (self == Route::Api && actual != Route::Token)
    }
}

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// 429 `REQUEST_LIMITED` with `Retry-After: <seconds>`.
    RateLimitSeconds {
        /// Seconds in `Retry-After`.
        retry_after_secs: u64,
    },
    /// 429 `REQUEST_LIMITED` with `Retry-After: <HTTP-date>` this many seconds ahead.
    RateLimitHttpDate {
        /// Seconds from now of the date in `Retry-After`.
        retry_after_secs: u64,
    },
    /// A 5xx answer: 500, 502, 503 or 504 (PingOne error body).
    ServerError {
        /// The status code.
        status: u16,
    },
    /// The normal answer, after a delay.
    Slow {
        /// Delay before answering, in milliseconds.
        delay_ms: u64,
    },
    /// The normal status and headers, then the connection is dropped half-way through the body.
    ResetMidBody,
    /// The bearer token presented is expired on the spot (401 `INVALID_TOKEN`), as if it had
    /// expired in the middle of a scan; new tokens work.
    ExpireToken,
}

impl FaultKind {
    fn validate(&self) -> Result<(), String> {
        match self {
            Self::ServerError { status } if ![500, 502, 503, 504].contains(status) => Err(format!(
                "server_error status {status} is not one of 500, 502, 503, 504"
            )),
            Self::Slow { delay_ms } if *delay_ms > 600_000 => {
                Err("slow delay_ms must be at most 600000".into())
            }
            _ => Ok(()),
        }
    }

    /// The default mix used by probability faults when no kinds are given.
    #[must_use]
    pub fn default_mix() -> Vec<FaultKind> {
        vec![
            Self::RateLimitSeconds {
                retry_after_secs: 1,
            },
            Self::RateLimitHttpDate {
                retry_after_secs: 1,
            },
            Self::ServerError { status: 500 },
            Self::ServerError { status: 502 },
            Self::ServerError { status: 503 },
            Self::ServerError { status: 504 },
            Self::ResetMidBody,
        ]
    }
}

/// Faults drawn at random (reproducibly from `seed` and the request count) on every request.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultProfile {
    /// Seed of the fault draws.
    #[serde(default)]
    pub seed: u64,
    /// Probability (0..=1) that an API request (not the token endpoint) gets a fault.
    #[serde(default)]
    pub api_probability: f64,
    /// Probability (0..=1) that a token request fails with 503.
    #[serde(default)]
    pub token_outage_probability: f64,
    /// The faults drawn from (uniformly); [`FaultKind::default_mix`] when empty.
    #[serde(default)]
    pub kinds: Vec<FaultKind>,
}

impl FaultProfile {
    /// Checks probabilities and kinds.
    ///
    /// # Errors
    /// A message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("api_probability", self.api_probability),
            ("token_outage_probability", self.token_outage_probability),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("faults.{name} must be between 0 and 1"));
            }
        }
        self.kinds.iter().try_for_each(FaultKind::validate)
    }
}

/// A fault fired by schedule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledFault {
    /// Requests it applies to.
    pub route: Route,
    /// Fire on this page of a scan (1 = the request without a cursor, 2 = the first `next`, ...).
    /// With neither `page` nor `nth_request`, fires on the next matching request.
    #[serde(default)]
    pub page: Option<u32>,
    /// Fire on the n-th matching request (1-based) counted from when the schedule was set.
    #[serde(default)]
    pub nth_request: Option<u32>,
    /// What happens.
    pub fault: FaultKind,
    /// How many times it fires (consecutive matching requests), default 1.
    #[serde(default = "one")]
    pub times: u32,
}

const fn one() -> u32 {
    1
}

impl ScheduledFault {
    /// Checks the schedule.
    ///
    /// # Errors
    /// A message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.page == Some(0) || self.nth_request == Some(0) {
            return Err("page and nth_request are 1-based".into());
        }
        if self.page.is_some() && self.nth_request.is_some() {
            return Err("give page or nth_request, not both".into());
        }
        if self.times == 0 {
            return Err("times must be at least 1".into());
        }
        if self.route == Route::Token && matches!(self.fault, FaultKind::ExpireToken) {
            return Err("expire_token does not apply to the token endpoint".into());
        }
        self.fault.validate()
    }
}

#[derive(Debug)]
struct Armed {
    spec: ScheduledFault,
    seen: u32,
    fired: u32,
}

/// The live fault state of one tenant.
#[derive(Debug, Default)]
pub struct FaultState {
    profile: FaultProfile,
    schedules: Vec<Armed>,
    api_requests: u64,
    token_requests: u64,
    fired_total: u64,
}

impl FaultState {
    /// A state drawing from `profile`.
    #[must_use]
    pub fn new(profile: FaultProfile) -> Self {
        Self {
            profile,
            ..Self::default()
        }
    }

    /// Replaces the probability profile.
    pub fn set_profile(&mut self, profile: FaultProfile) {
        self.profile = profile;
        self.api_requests = 0;
        self.token_requests = 0;
    }

    /// Arms a schedule.
    pub fn schedule(&mut self, spec: ScheduledFault) {
        self.schedules.push(Armed {
            spec,
            seen: 0,
            fired: 0,
        });
    }

    /// Removes every schedule and the probability profile.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Number of faults injected so far.
    #[must_use]
    pub fn fired_total(&self) -> u64 {
        self.fired_total
    }

    /// Decides the fault (if any) of one request; `page` is the scan page of paged routes.
    pub fn decide(&mut self, route: Route, page: Option<u32>) -> Option<FaultKind> {
        let mut chosen = None;
        for armed in &mut self.schedules {
            if !armed.spec.route.matches(route) || armed.fired >= armed.spec.times {
                continue;
            }
            armed.seen += 1;
            let due = match (armed.spec.page, armed.spec.nth_request) {
                (Some(p), _) => page == Some(p),
                (None, Some(n)) => armed.seen >= n,
                (None, None) => true,
            };
            if due && chosen.is_none() {
                armed.fired += 1;
                chosen = Some(armed.spec.fault);
            }
        }
        self.schedules.retain(|a| a.fired < a.spec.times);
        if chosen.is_none() {
            chosen = self.draw(route);
        }
        if chosen.is_some() {
            self.fired_total += 1;
        }
        chosen
    }

    fn draw(&mut self, route: Route) -> Option<FaultKind> {
        if route == Route::Token {
            self.token_requests += 1;
            let r = rng::unit(rng::hash(self.profile.seed, &[1, self.token_requests]));
            return (r < self.profile.token_outage_probability)
                .then_some(FaultKind::ServerError { status: 503 });
        }
        self.api_requests += 1;
        let h = rng::hash(self.profile.seed, &[2, self.api_requests]);
        if rng::unit(h) >= self.profile.api_probability {
            return None;
        }
        let mix;
        let kinds = if self.profile.kinds.is_empty() {
            mix = FaultKind::default_mix();
            &mix
        } else {
            &self.profile.kinds
        };
        let i = usize::try_from(rng::mix(h) % kinds.len() as u64).unwrap_or(0);
        kinds.get(i).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_schedule_fires_once_on_that_page() {
        let mut s = FaultState::default();
        s.schedule(ScheduledFault {
            route: Route::Users,
            page: Some(3),
            nth_request: None,
            fault: FaultKind::ServerError { status: 502 },
            times: 1,
        });
        assert_eq!(s.decide(Route::Users, Some(1)), None);
        assert_eq!(s.decide(Route::Groups, Some(3)), None);
        assert_eq!(s.decide(Route::Users, Some(2)), None);
        assert_eq!(
            s.decide(Route::Users, Some(3)),
            Some(FaultKind::ServerError { status: 502 })
        );
        assert_eq!(s.decide(Route::Users, Some(3)), None);
    }

    #[test]
    fn probability_is_reproducible() {
        let profile = FaultProfile {
            seed: 9,
            api_probability: 0.3,
            ..FaultProfile::default()
        };
        let run = || {
            let mut s = FaultState::new(profile.clone());
            (0..200)
                .map(|_| s.decide(Route::Users, None))
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|f| f.is_some()).count();
        assert!((30..90).contains(&hits), "{hits} faults in 200 at p=0.3");
    }
}
