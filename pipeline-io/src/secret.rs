//! A value that must never be printed: client secrets, passwords, access tokens. Shared by the
//! producer's and the transformer's configuration and by the registry client's credentials.
//!
//! [`Secret`] has no `Display`, its `Debug` prints `***`, and the only way to the text is the
//! explicit [`Secret::expose`], so a secret cannot end up in a log line, an error or a metric by
//! accident.

use std::fmt;

use serde::Deserialize;

/// A secret string. `Debug` prints `***`; use [`Secret::expose`] where the value is really sent.
/// Deserializes from a plain string, for configuration files.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret text, for the one place that sends it (a token request, a client option).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(***)");
        assert_eq!(secret.expose(), "hunter2");
    }
}
