//! Tolerant parsing of PingOne HAL pages and error bodies.
//!
//! Items are kept as the exact JSON text PingOne sent ([`RawValue`]), so unknown fields survive
//! and nothing is re-serialized. Only the few fields the producer needs (`id`, the next link,
//! application access groups) are read; absent ones are accepted.

use serde::Deserialize;
use serde_json::value::RawValue;

/// One page of a collection.
#[derive(Debug)]
pub struct Page {
    /// The elements of `_embedded.<collection>`, verbatim.
    pub items: Vec<Box<RawValue>>,
    /// `_links.next.href`, absent on the last page.
    pub next: Option<String>,
}

#[derive(Deserialize)]
struct Href {
    href: Option<String>,
}

#[derive(Deserialize)]
struct Links {
    next: Option<Href>,
}

#[derive(Deserialize)]
struct PageBody {
    #[serde(rename = "_links")]
    links: Option<Links>,
    #[serde(rename = "_embedded")]
    embedded: Option<std::collections::HashMap<String, Box<RawValue>>>,
}

impl Page {
    /// Parses a page body; `collection` names the `_embedded` key (`users`, `activities`, …).
    /// A page without `_embedded` or without that key has no items.
    ///
    /// # Errors
    /// A description when the body is not a JSON object or `_embedded.<collection>` is not an
    /// array of objects.
    pub fn parse(body: &[u8], collection: &str) -> Result<Page, String> {
        let page: PageBody =
            serde_json::from_slice(body).map_err(|e| format!("not a HAL page: {e}"))?;
        let mut items: Vec<Box<RawValue>> =
            match page.embedded.as_ref().and_then(|e| e.get(collection)) {
                Some(raw) => serde_json::from_str(raw.get())
                    .map_err(|e| format!("_embedded.{collection} is not an array: {e}"))?,
                None => Vec::new(),
            };
        for item in &items {
            if !item.get().trim_start().starts_with('{') {
                return Err(format!("_embedded.{collection} holds a non-object element"));
            }
        }
        items.shrink_to_fit();
        Ok(Page {
            items,
            next: page
                .links
                .and_then(|l| l.next)
                .and_then(|n| n.href)
                .filter(|h| !h.is_empty()),
        })
    }
}

/// Reads the `id` of an item; `None` when absent or not a string.
pub fn item_id(item: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<serde_json::Value>,
    }
    serde_json::from_str::<IdOnly>(item.get())
        .ok()
        .and_then(|i| i.id)
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// Reads `recordedAt` of an activity, if present.
pub fn item_recorded_at(item: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Recorded {
        #[serde(rename = "recordedAt")]
        recorded_at: Option<serde_json::Value>,
    }
    serde_json::from_str::<Recorded>(item.get())
        .ok()
        .and_then(|i| i.recorded_at)
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// The group ids in an application's `accessControl.group.groups[].id`.
pub fn application_access_groups(item: &RawValue) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(item.get()) else {
        return Vec::new();
    };
    v.pointer("/accessControl/group/groups")
        .and_then(|g| g.as_array())
        .map(|groups| {
            groups
                .iter()
                .filter_map(|g| g.get("id").and_then(|id| id.as_str()).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A PingOne API error body (`{"id","code","message","details":[{"code"}]}`), all optional.
#[derive(Debug, Default, Deserialize)]
pub struct ApiErrorBody {
    /// Error id.
    pub id: Option<String>,
    /// Error code.
    pub code: Option<String>,
    /// Message.
    pub message: Option<String>,
    /// Details.
    #[serde(default)]
    pub details: Vec<ApiErrorDetail>,
}

/// One `details[]` element.
#[derive(Debug, Default, Deserialize)]
pub struct ApiErrorDetail {
    /// Detail code, e.g. `INVALID_TOKEN`.
    pub code: Option<String>,
}

impl ApiErrorBody {
    /// Parses an error body; anything unparsable gives an empty body.
    pub fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// The detail codes.
    pub fn detail_codes(&self) -> Vec<String> {
        self.details.iter().filter_map(|d| d.code.clone()).collect()
    }
}

/// An OAuth error body from the token endpoint.
#[derive(Debug, Default, Deserialize)]
pub struct OAuthErrorBody {
    /// `error`.
    pub error: Option<String>,
    /// `error_description`.
    pub error_description: Option<String>,
}

impl OAuthErrorBody {
    /// Parses a token endpoint error body; anything unparsable gives an empty body.
    pub fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_items_verbatim_and_reads_next() {
        let body = br#"{"_links":{"self":{"href":"x"},"next":{"href":"https://h/v1/e/users?cursor=a%20b"}},
            "_embedded":{"users":[{"id":"u1","custom":{"z":1,"a":2}, "username":"ada"},{"username":"nobody"}]},"size":2}"#;
        let page = Page::parse(body, "users").unwrap();
        assert_eq!(
            page.next.as_deref(),
            Some("https://h/v1/e/users?cursor=a%20b")
        );
        assert_eq!(page.items.len(), 2);
        assert_eq!(
            page.items[0].get(),
            r#"{"id":"u1","custom":{"z":1,"a":2}, "username":"ada"}"#
        );
        assert_eq!(item_id(&page.items[0]).as_deref(), Some("u1"));
        assert_eq!(item_id(&page.items[1]), None);
    }

    #[test]
    fn absent_embedded_is_an_empty_last_page() {
        let page = Page::parse(br#"{"_links":{"self":{"href":"x"}}}"#, "users").unwrap();
        assert!(page.items.is_empty());
        assert!(page.next.is_none());
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(Page::parse(b"<html>", "users").is_err());
        assert!(Page::parse(br#"{"_embedded":{"users":{"id":1}}}"#, "users").is_err());
        assert!(Page::parse(br#"{"_embedded":{"users":[1,2]}}"#, "users").is_err());
    }

    #[test]
    fn reads_application_access_groups() {
        let app = RawValue::from_string(
            r#"{"id":"a","accessControl":{"group":{"type":"ANY_GROUP","groups":[{"id":"g1"},{"id":"g2"}]}}}"#
                .into(),
        )
        .unwrap();
        assert_eq!(application_access_groups(&app), ["g1", "g2"]);
        let none = RawValue::from_string(r#"{"id":"b"}"#.into()).unwrap();
        assert!(application_access_groups(&none).is_empty());
    }

    #[test]
    fn parses_error_bodies() {
        let e = ApiErrorBody::parse(
            br#"{"id":"e-1","code":"ACCESS_FAILED","message":"m","details":[{"code":"INVALID_TOKEN"}]}"#,
        );
        assert_eq!(e.code.as_deref(), Some("ACCESS_FAILED"));
        assert_eq!(e.detail_codes(), ["INVALID_TOKEN"]);
        assert!(ApiErrorBody::parse(b"oops").code.is_none());
    }
}
