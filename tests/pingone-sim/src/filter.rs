//! The SCIM filter subset PingOne accepts: parsing, per-collection validation and evaluation.
//!
//! Grammar: `expr := and ("or" and)*`, `and := term ("and" term)*`,
//! `term := "(" expr ")" | path op value | "memberOfGroups[id eq \"<uuid>\"]"`, operators
//! `eq`, `sw`, `gt`, `ge`, `lt`, `le`; values are double-quoted strings, `true`, `false` or
//! numbers. Which attributes and operators a collection accepts is checked separately; anything
//! else is answered with 400 `INVALID_FILTER`.

use serde_json::Value;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal.
    Eq,
    /// Starts with.
    Sw,
    /// Greater than.
    Gt,
    /// Greater or equal.
    Ge,
    /// Less than.
    Lt,
    /// Less or equal.
    Le,
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(f64),
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Both.
    And(Box<Expr>, Box<Expr>),
    /// Either.
    Or(Box<Expr>, Box<Expr>),
    /// `path op value`; `path` as written.
    Cmp {
        /// Attribute path as written.
        path: String,
        /// Operator.
        op: Op,
        /// Value.
        value: Lit,
    },
    /// `memberOfGroups[id eq "..."]`.
    MemberOf(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
    OpenBracket,
    CloseBracket,
}

fn lex(input: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | '[' | ']' => {
                chars.next();
                out.push(match c {
                    '(' => Tok::Open,
                    ')' => Tok::Close,
                    '[' => Tok::OpenBracket,
                    _ => Tok::CloseBracket,
                });
            }
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated string".into()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e) => s.push(e),
                            None => return Err("unterminated string".into()),
                        },
                        Some(ch) => s.push(ch),
                    }
                }
                out.push(Tok::Str(s));
            }
            _ => {
                let mut w = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_alphanumeric() || matches!(ch, '.' | '_' | '-' | ':' | '+') {
                        w.push(ch);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if w.is_empty() {
                    return Err(format!("unexpected character {c:?}"));
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.term()?;
        while self.peek_word("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Open) => {
                let e = self.expr()?;
                match self.next() {
                    Some(Tok::Close) => Ok(e),
                    _ => Err("missing ')'".into()),
                }
            }
            Some(Tok::Word(path)) => {
                if path.eq_ignore_ascii_case("not") {
                    return Err("'not' is not supported".into());
                }
                if path.eq_ignore_ascii_case("memberOfGroups") {
                    return self.member_of();
                }
                let op = match self.next() {
                    Some(Tok::Word(op)) => match op.to_ascii_lowercase().as_str() {
                        "eq" => Op::Eq,
                        "sw" => Op::Sw,
                        "gt" => Op::Gt,
                        "ge" => Op::Ge,
                        "lt" => Op::Lt,
                        "le" => Op::Le,
                        other => return Err(format!("unsupported operator {other:?}")),
                    },
                    _ => return Err(format!("expected an operator after {path:?}")),
                };
                let value = match self.next() {
                    Some(Tok::Str(s)) => Lit::Str(s),
                    Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Lit::Bool(true),
                    Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => Lit::Bool(false),
                    Some(Tok::Word(w)) => {
                        Lit::Num(w.parse().map_err(|_| format!("invalid value {w:?}"))?)
                    }
                    _ => return Err(format!("expected a value after {path:?}")),
                };
                Ok(Expr::Cmp { path, op, value })
            }
            _ => Err("expected an attribute or '('".into()),
        }
    }

    fn member_of(&mut self) -> Result<Expr, String> {
        let ok = self.next() == Some(Tok::OpenBracket)
            && matches!(self.next(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("id"))
            && matches!(self.next(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("eq"));
        if !ok {
            return Err("expected memberOfGroups[id eq \"<group id>\"]".into());
        }
        let Some(Tok::Str(id)) = self.next() else {
            return Err("expected a quoted group id".into());
        };
        if self.next() != Some(Tok::CloseBracket) {
            return Err("missing ']'".into());
        }
        Ok(Expr::MemberOf(id.to_ascii_lowercase()))
    }
}

/// Parses a filter string.
///
/// # Errors
/// A message saying what is wrong.
pub fn parse(input: &str) -> Result<Expr, String> {
    let toks = lex(input)?;
    if toks.is_empty() {
        return Err("empty filter".into());
    }
    let mut p = Parser { toks, pos: 0 };
    let e = p.expr()?;
    if p.pos != p.toks.len() {
        return Err("unexpected text after the filter".into());
    }
    Ok(e)
}

/// Attribute paths `GET /users` accepts (lowercase) and the JSON path they read.
const USER_ATTRS: &[(&str, &[&str])] = &[
    ("id", &["id"]),
    ("username", &["username"]),
    ("email", &["email"]),
    ("name.given", &["name", "given"]),
    ("name.family", &["name", "family"]),
    ("name.middle", &["name", "middle"]),
    ("name.formatted", &["name", "formatted"]),
    ("name.honorificprefix", &["name", "honorificPrefix"]),
    ("name.honorificsuffix", &["name", "honorificSuffix"]),
    ("population.id", &["population", "id"]),
    ("enabled", &["enabled"]),
    ("type", &["type"]),
    ("externalid", &["externalId"]),
    ("address.streetaddress", &["address", "streetAddress"]),
    ("address.locality", &["address", "locality"]),
    ("address.region", &["address", "region"]),
    ("address.postalcode", &["address", "postalCode"]),
    ("address.countrycode", &["address", "countryCode"]),
];

const GROUP_ATTRS: &[(&str, &[&str])] = &[
    ("id", &["id"]),
    ("name", &["name"]),
    ("population.id", &["population", "id"]),
    ("externalid", &["externalId"]),
];

/// Which collection a filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// `/users`.
    Users,
    /// `/groups`.
    Groups,
}

impl Collection {
    fn attrs(self) -> &'static [(&'static str, &'static [&'static str])] {
        match self {
            Self::Users => USER_ATTRS,
            Self::Groups => GROUP_ATTRS,
        }
    }
}

/// A filter checked against a collection, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Filter {
    expr: Expr,
    collection: Collection,
}

impl Filter {
    /// Parses and validates a filter for `collection`.
    ///
    /// # Errors
    /// A message for the `INVALID_FILTER` answer.
    pub fn new(input: &str, collection: Collection) -> Result<Self, String> {
        let expr = parse(input)?;
        validate(&expr, collection)?;
        Ok(Self { expr, collection })
    }

    /// The group ids the entity must belong to for the filter to match (top-level `and` terms).
    #[must_use]
    pub fn required_groups(&self) -> Vec<String> {
        fn walk(e: &Expr, out: &mut Vec<String>) {
            match e {
                Expr::And(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Expr::MemberOf(g) => out.push(g.clone()),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&self.expr, &mut out);
        out
    }

    /// Whether the filter is only `memberOfGroups[...]` terms joined by `and`.
    #[must_use]
    pub fn only_groups(&self) -> bool {
        fn walk(e: &Expr) -> bool {
            match e {
                Expr::And(a, b) => walk(a) && walk(b),
                Expr::MemberOf(_) => true,
                _ => false,
            }
        }
        walk(&self.expr)
    }

    /// Evaluates the filter on an entity; `member_of(group_id)` answers membership.
    pub fn matches(&self, entity: &Value, member_of: &mut dyn FnMut(&str) -> bool) -> bool {
        eval(&self.expr, self.collection, entity, member_of)
    }
}

fn validate(e: &Expr, c: Collection) -> Result<(), String> {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => {
            validate(a, c)?;
            validate(b, c)
        }
        Expr::MemberOf(id) => {
            if c != Collection::Users {
                return Err("memberOfGroups is only supported on users".into());
            }
            uuid::Uuid::parse_str(id)
                .map(|_| ())
                .map_err(|_| format!("{id:?} is not a group id"))
        }
        Expr::Cmp { path, op, value } => {
            let lower = path.to_ascii_lowercase();
            if !c.attrs().iter().any(|(name, _)| *name == lower) {
                return Err(format!("attribute {path:?} is not filterable"));
            }
            if !matches!(op, Op::Eq | Op::Sw) {
                return Err(format!("operator not supported on {path:?}: use eq or sw"));
            }
            match (lower.as_str(), value) {
                ("enabled", Lit::Bool(_)) => Ok(()),
                ("enabled", _) => Err("enabled takes true or false".into()),
                (_, Lit::Str(_)) => {
                    if *op == Op::Sw && lower.ends_with("id") && lower != "externalid" {
                        Err(format!("sw is not supported on {path:?}"))
                    } else {
                        Ok(())
                    }
                }
                _ => Err(format!("{path:?} takes a quoted string")),
            }
        }
    }
}

fn lookup<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn eval(e: &Expr, c: Collection, v: &Value, member_of: &mut dyn FnMut(&str) -> bool) -> bool {
    match e {
        Expr::And(a, b) => eval(a, c, v, member_of) && eval(b, c, v, member_of),
        Expr::Or(a, b) => eval(a, c, v, member_of) || eval(b, c, v, member_of),
        Expr::MemberOf(g) => member_of(g),
        Expr::Cmp { path, op, value } => {
            let lower = path.to_ascii_lowercase();
            let Some((_, json_path)) = c.attrs().iter().find(|(n, _)| *n == lower) else {
                return false;
            };
            let Some(actual) = lookup(v, json_path) else {
                return false;
            };
            match (actual, value) {
                (Value::Bool(a), Lit::Bool(b)) => a == b,
                (Value::String(a), Lit::Str(b)) => match op {
                    Op::Eq => a.to_lowercase() == b.to_lowercase(),
                    Op::Sw => a.to_lowercase().starts_with(&b.to_lowercase()),
                    _ => false,
                },
                _ => false,
            }
        }
    }
}

/// A validated `/activities` filter: a required time range plus at most one `eq`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityFilter {
    /// Lower bound (epoch ms) and whether it is inclusive (`ge`).
    pub from_ms: (i64, bool),
    /// Upper bound (epoch ms) and whether it is inclusive (`le`).
    pub to_ms: (i64, bool),
    /// Optional `eq` on one attribute: (JSON path as written lowercased, value).
    pub eq: Option<(String, String)>,
}

const ACTIVITY_EQ: &[&str] = &[
    "action.type",
    "actors.user.id",
    "actors.client.id",
    "resources.id",
    "resources.type",
    "resources.population.id",
];

impl ActivityFilter {
    /// Parses and validates an activities filter.
    ///
    /// # Errors
    /// A message for the `INVALID_FILTER` answer.
    pub fn new(input: &str) -> Result<Self, String> {
        fn flatten(e: Expr, out: &mut Vec<Expr>) -> Result<(), String> {
            match e {
                Expr::And(a, b) => {
                    flatten(*a, out)?;
                    flatten(*b, out)
                }
                Expr::Or(..) => Err("'or' is not supported in activity filters".into()),
                other => {
                    out.push(other);
                    Ok(())
                }
            }
        }
        let mut terms = Vec::new();
        flatten(parse(input)?, &mut terms)?;
        let (mut from, mut to, mut eq) = (None, None, None);
        for t in terms {
            let Expr::Cmp { path, op, value } = t else {
                return Err("memberOfGroups is not supported in activity filters".into());
            };
            let lower = path.to_ascii_lowercase();
            if lower == "recordedat" {
                let Lit::Str(s) = value else {
                    return Err("recordedAt takes a quoted timestamp".into());
                };
                let ms = crate::data::parse_ms(&s)
                    .ok_or_else(|| format!("{s:?} is not an RFC 3339 timestamp"))?;
                let slot = match op {
                    Op::Gt | Op::Ge => &mut from,
                    Op::Lt | Op::Le => &mut to,
                    _ => return Err("recordedAt takes gt, ge, lt or le".into()),
                };
                if slot.is_some() {
                    return Err("recordedAt bound given twice".into());
                }
                *slot = Some((ms, matches!(op, Op::Ge | Op::Le)));
            } else if ACTIVITY_EQ.contains(&lower.as_str()) {
                let (Op::Eq, Lit::Str(s)) = (op, value) else {
                    return Err(format!("{path} takes eq and a quoted string"));
                };
                if eq.is_some() {
                    return Err("at most one eq besides the time range".into());
                }
                eq = Some((lower, s));
            } else {
                return Err(format!("attribute {path:?} is not filterable"));
            }
        }
        match (from, to) {
            (Some(from_ms), Some(to_ms)) => Ok(Self { from_ms, to_ms, eq }),
            _ => Err(
                "a time range is required: recordedat gt \"<from>\" and recordedat lt \"<to>\""
                    .into(),
            ),
        }
    }

    /// Whether an event matches the time range and the `eq`.
    #[must_use]
    pub fn matches(&self, at_ms: i64, event: &Value) -> bool {
        let after = if self.from_ms.1 {
            at_ms >= self.from_ms.0
        } else {
            at_ms > self.from_ms.0
        };
        let before = if self.to_ms.1 {
            at_ms <= self.to_ms.0
        } else {
            at_ms < self.to_ms.0
        };
        after && before && self.eq_matches(event)
    }

    /// Whether an event matches the `eq` part only.
    #[must_use]
    pub fn eq_matches(&self, event: &Value) -> bool {
        let Some((path, want)) = &self.eq else {
            return true;
        };
        let get = |v: &Value, p: &[&str]| lookup(v, p).and_then(Value::as_str).map(str::to_owned);
        let any_resource = |p: &[&str]| {
            event
                .get("resources")
                .and_then(Value::as_array)
                .is_some_and(|rs| {
                    rs.iter()
                        .any(|r| get(r, p).as_deref() == Some(want.as_str()))
                })
        };
        match path.as_str() {
            "action.type" => get(event, &["action", "type"]).as_deref() == Some(want.as_str()),
            "actors.user.id" => {
                get(event, &["actors", "user", "id"]).as_deref() == Some(want.as_str())
            }
            "actors.client.id" => {
                get(event, &["actors", "client", "id"]).as_deref() == Some(want.as_str())
            }
            "resources.id" => any_resource(&["id"]),
            "resources.type" => any_resource(&["type"]),
            "resources.population.id" => any_resource(&["population", "id"]),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_evaluates_user_filters() {
        let f = Filter::new(
            r#"(username sw "ALI" or email eq "x@y") and enabled eq true and address.countryCode eq "US""#,
            Collection::Users,
        )
        .expect("valid");
        let u = json!({"username":"alice.smith1","enabled":true,"address":{"countryCode":"US"}});
        assert!(f.matches(&u, &mut |_| false));
        let u2 = json!({"username":"bob","enabled":true,"address":{"countryCode":"US"}});
        assert!(!f.matches(&u2, &mut |_| false));
    }

    #[test]
    fn rejects_unsupported_filters() {
        for bad in [
            "lastSignOn.at gt \"2026-01-01T00:00:00Z\"",
            "mfaEnabled eq true",
            "username co \"a\"",
            "username eq",
            "(username eq \"a\"",
            "not (username eq \"a\")",
            "memberOfGroups[name eq \"x\"]",
            "enabled eq \"yes\"",
        ] {
            assert!(
                Filter::new(bad, Collection::Users).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn member_of_groups_is_required_group() {
        let f = Filter::new(
            r#"memberOfGroups[id eq "6F1C2B0E-8D4A-4F37-9A51-3C2E7B90D1A4"]"#,
            Collection::Users,
        )
        .expect("valid");
        assert_eq!(
            f.required_groups(),
            vec!["6f1c2b0e-8d4a-4f37-9a51-3c2e7b90d1a4".to_string()]
        );
    }

    #[test]
    fn activity_filters_need_a_time_range() {
        let ok = ActivityFilter::new(
            r#"recordedat gt "2026-11-01T00:00:00.000Z" and recordedAt lt "2026-11-02T00:00:00Z" and action.type eq "USER.ACCESS_ALLOWED""#,
        )
        .expect("valid");
        assert_eq!(
            ok.eq,
            Some(("action.type".into(), "USER.ACCESS_ALLOWED".into()))
        );
        assert!(ActivityFilter::new(r#"action.type eq "USER.ACCESS_ALLOWED""#).is_err());
        assert!(ActivityFilter::new(r#"recordedat gt "2026-11-01T00:00:00Z""#).is_err());
        assert!(
            ActivityFilter::new(
                r#"recordedat gt "2026-11-01T00:00:00Z" or recordedat lt "2026-11-02T00:00:00Z""#
            )
            .is_err()
        );
    }
}
