//! Goals: what a site counts as a conversion, configured per site (`goals` in `[[sites]]`) and
//! reported by the stats API (`event:goal`, `conversion_rate`).
//!
//! A goal is written as its display name: a custom event's name (`"Signup"`), or
//! `"Visit /path"` for page views of a path, where `*` matches any characters
//! (`"Visit /blog/*"`), as Plausible names its goals.

/// Longest goal name accepted (as long as an event name may be).
pub const MAX_GOAL_LENGTH: usize = 120;

const PAGE_PREFIX: &str = "Visit ";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoalKind {
    /// A custom event with this name.
    Event(String),
    /// Page views whose path matches this pattern (`*`: any characters).
    Page(String),
}

/// Why a goal cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoalError {
    #[error("goal {0:?}: a goal is 1 to {MAX_GOAL_LENGTH} characters")]
    Length(String),
    #[error("goal {0:?}: a page goal is \"Visit /path\" (the path starts with /)")]
    PagePath(String),
    #[error("goal {0:?} is listed twice")]
    Twice(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goal {
    /// How it is configured and reported, e.g. `Visit /pricing`.
    pub name: String,
    pub kind: GoalKind,
}

impl Goal {
    /// Parses a goal as written in the configuration.
    pub fn parse(text: &str) -> Result<Goal, GoalError> {
        let name = text.trim();
        if name.is_empty() || name.chars().count() > MAX_GOAL_LENGTH {
            return Err(GoalError::Length(text.to_string()));
        }
        let kind = match name.strip_prefix(PAGE_PREFIX) {
            Some(path) if path.starts_with('/') => GoalKind::Page(path.to_string()),
            Some(_) => return Err(GoalError::PagePath(text.to_string())),
            None => GoalKind::Event(name.to_string()),
        };
        Ok(Goal {
            name: name.to_string(),
            kind,
        })
    }

    /// For a page goal, a regular expression (RE2, as ClickHouse's `match` takes it) that
    /// matches the whole path: the pattern's text literally, `*` as any characters.
    pub fn path_regex(&self) -> Option<String> {
        let GoalKind::Page(pattern) = &self.kind else {
            return None;
        };
        Some(path_pattern_regex(pattern))
    }
}

/// A regular expression (RE2) matching the whole of a path `pattern`: its text literally, `*`
/// as any characters. Page goals and funnel page steps share it.
pub fn path_pattern_regex(pattern: &str) -> String {
    let mut regex = String::from("^");
    for (i, part) in pattern.split('*').enumerate() {
        if i > 0 {
            regex.push_str(".*");
        }
        // regex-syntax escapes only punctuation, which RE2 reads as the literal too.
        regex.push_str(&regex_syntax::escape(part));
    }
    regex.push('$');
    regex
}

/// Parses a site's goals; names must be unique.
pub fn parse_goals(texts: &[String]) -> Result<Vec<Goal>, GoalError> {
    let mut goals: Vec<Goal> = Vec::with_capacity(texts.len());
    for text in texts {
        let goal = Goal::parse(text)?;
        if goals.iter().any(|g| g.name == goal.name) {
            return Err(GoalError::Twice(goal.name));
        }
        goals.push(goal);
    }
    Ok(goals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_and_page_goals() {
        assert_eq!(
            Goal::parse("Signup").unwrap().kind,
            GoalKind::Event("Signup".into())
        );
        let page = Goal::parse("Visit /blog/*").unwrap();
        assert_eq!(page.kind, GoalKind::Page("/blog/*".into()));
        assert_eq!(page.path_regex().unwrap(), r"^/blog/.*$");
        assert_eq!(
            Goal::parse("Visit /a.b+(c)").unwrap().path_regex().unwrap(),
            r"^/a\.b\+\(c\)$"
        );
        assert_eq!(Goal::parse("Signup").unwrap().path_regex(), None);
    }

    #[test]
    fn bad_goals_are_refused_with_a_reason() {
        assert!(Goal::parse("")
            .unwrap_err()
            .to_string()
            .contains("1 to 120"));
        assert!(Goal::parse(&"x".repeat(121)).is_err());
        assert!(Goal::parse("Visit pricing")
            .unwrap_err()
            .to_string()
            .contains("starts with /"));
        let twice = ["Signup".to_string(), " Signup ".to_string()];
        assert!(parse_goals(&twice)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }
}
