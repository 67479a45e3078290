//! Funnels: ordered steps a visit goes through (page views of a path pattern, custom events,
//! the site's goals), counted by the stats API (`POST /api/v2/funnel`) and saved per site by
//! name (`/api/v1/sites/funnels`, stored by the live registry).
//!
//! Steps are written as JSON objects, as the API takes them and the registry stores them:
//! `{"page": "/blog/*"}` (`*` matches any characters, as in page goals), `{"event": "Signup"}`,
//! `{"goal": "Visit /pricing"}` (one of the site's goals, by name).

use serde_json::{json, Value};

use crate::goals::{path_pattern_regex, MAX_GOAL_LENGTH};

/// Fewest and most steps of a funnel (Plausible's bounds).
pub const MIN_STEPS: usize = 2;
pub const MAX_STEPS: usize = 8;
/// Longest funnel name.
pub const MAX_NAME_LENGTH: usize = 120;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Page views whose path matches this pattern (`*`: any characters).
    Page(String),
    /// Custom events with this name.
    Event(String),
    /// One of the site's goals, by name (checked against the site's goals where it is used).
    Goal(String),
}

impl Step {
    /// What the dashboard and the API's answer call the step.
    pub fn label(&self) -> String {
        match self {
            Step::Page(pattern) => format!("Visit {pattern}"),
            Step::Event(name) | Step::Goal(name) => name.clone(),
        }
    }

    /// The regular expression (RE2) of a page step's pattern.
    pub fn path_regex(&self) -> Option<String> {
        match self {
            Step::Page(pattern) => Some(path_pattern_regex(pattern)),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Step::Page(p) => json!({ "page": p }),
            Step::Event(e) => json!({ "event": e }),
            Step::Goal(g) => json!({ "goal": g }),
        }
    }
}

/// A saved funnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Funnel {
    pub name: String,
    pub steps: Vec<Step>,
}

impl Funnel {
    pub fn to_json(&self) -> Value {
        json!({ "name": self.name, "steps": steps_json(&self.steps) })
    }
}

/// Why a funnel cannot be used: `path` is the offending value's JSON path (`#/steps/1`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FunnelError {
    pub path: String,
    pub message: String,
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> FunnelError {
    FunnelError {
        path: path.into(),
        message: message.into(),
    }
}

/// A funnel's name: trimmed, 1 to [`MAX_NAME_LENGTH`] characters.
pub fn parse_name(value: Option<&Value>) -> Result<String, FunnelError> {
    let name = value.and_then(Value::as_str).map(str::trim).unwrap_or("");
    if name.is_empty() || name.chars().count() > MAX_NAME_LENGTH {
        return Err(invalid(
            "#/name",
            format!("a funnel's name is 1 to {MAX_NAME_LENGTH} characters"),
        ));
    }
    Ok(name.to_string())
}

/// Reads `steps`: a list of [`MIN_STEPS`] to [`MAX_STEPS`] step objects.
pub fn parse_steps(value: Option<&Value>) -> Result<Vec<Step>, FunnelError> {
    let list = value.and_then(Value::as_array).ok_or_else(|| {
        invalid(
            "#/steps",
            format!(
                "expected a list of {MIN_STEPS} to {MAX_STEPS} steps, each {{\"page\": \
                 \"/path\"}}, {{\"event\": \"Name\"}} or {{\"goal\": \"Name\"}}"
            ),
        )
    })?;
    if !(MIN_STEPS..=MAX_STEPS).contains(&list.len()) {
        return Err(invalid(
            "#/steps",
            format!(
                "a funnel has {MIN_STEPS} to {MAX_STEPS} steps, not {}",
                list.len()
            ),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, v)| parse_step(v, &format!("#/steps/{i}")))
        .collect()
}

fn parse_step(value: &Value, path: &str) -> Result<Step, FunnelError> {
    let object = value.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
        invalid(
            path,
            "a step is one of {\"page\": \"/path\"}, {\"event\": \"Name\"}, {\"goal\": \"Name\"}",
        )
    })?;
    let (kind, text) = object.iter().next().expect("one field");
    let text = text
        .as_str()
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.chars().count() <= MAX_GOAL_LENGTH)
        .ok_or_else(|| {
            invalid(
                format!("{path}/{kind}"),
                format!("expected text of 1 to {MAX_GOAL_LENGTH} characters"),
            )
        })?
        .to_string();
    match kind.as_str() {
        "page" if text.starts_with('/') => Ok(Step::Page(text)),
        "page" => Err(invalid(
            format!("{path}/page"),
            "a page pattern starts with /",
        )),
        "event" => Ok(Step::Event(text)),
        "goal" => Ok(Step::Goal(text)),
        other => Err(invalid(
            path,
            format!(
                "unknown step kind {:?}; use page, event or goal",
                other.chars().take(40).collect::<String>()
            ),
        )),
    }
}

/// Steps as the JSON list the API takes (and the registry stores).
pub fn steps_json(steps: &[Step]) -> Value {
    Value::Array(steps.iter().map(Step::to_json).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_and_write_back() {
        let value = json!([{"page": "/blog/*"}, {"event": "Signup"}, {"goal": "Visit /x"}]);
        let steps = parse_steps(Some(&value)).unwrap();
        assert_eq!(
            steps,
            [
                Step::Page("/blog/*".into()),
                Step::Event("Signup".into()),
                Step::Goal("Visit /x".into())
            ]
        );
        assert_eq!(steps_json(&steps), value);
        assert_eq!(steps[0].label(), "Visit /blog/*");
        assert_eq!(steps[0].path_regex().unwrap(), "^/blog/.*$");
    }

    #[test]
    fn bad_steps_name_the_value() {
        let error = |v: Value| parse_steps(Some(&v)).unwrap_err().to_string();
        assert!(error(json!([{"page": "/a"}])).contains("2 to 8 steps"));
        assert!(error(Value::Array(vec![json!({"page": "/a"}); 9])).contains("not 9"));
        assert!(error(json!([{"page": "/a"}, {"page": "a"}])).starts_with("#/steps/1/page"));
        assert!(error(json!([{"page": "/a"}, {"click": "a"}])).contains("unknown step kind"));
        assert!(error(json!([{"page": "/a"}, {"event": ""}])).starts_with("#/steps/1/event"));
        assert!(
            error(json!([{"page": "/a", "event": "b"}, {"event": "c"}])).starts_with("#/steps/0")
        );
        assert!(error(json!("steps")).starts_with("#/steps"));
        assert!(parse_name(Some(&json!("  "))).is_err());
        assert_eq!(parse_name(Some(&json!(" Buy "))).unwrap(), "Buy");
    }
}
