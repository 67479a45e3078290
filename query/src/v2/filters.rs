//! v2 filters: `[operator, dimension, [values], modifiers?]`, and `["and", [filters]]`,
//! `["or", [filters]]`, `["not", filter]`, read into the plan's condition tree.

use serde_json::Value;

use super::{bad, short};
use crate::error::ApiError;
use crate::params::Condition;
use crate::params::{
    truncate, EventProperty, Filter, FilterOp, Property, MAX_ALTERNATIVES, MAX_FILTERS,
    MAX_FILTER_VALUE,
};

/// Longest regular expression accepted: with ClickHouse's RE2 a match is linear in the text,
/// the cap bounds the pattern's compilation.
const MAX_REGEX: usize = 300;
/// Deepest nesting of `and`/`or`/`not`, and of a regular expression's groups.
const MAX_DEPTH: u32 = 8;

/// The request's `filters`, joined by `and`.
pub fn parse(value: Option<&Value>) -> Result<Vec<Condition>, ApiError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let list = value
        .as_array()
        .ok_or_else(|| bad("filters", "#/filters: expected a list of filters"))?;
    let mut leaves = 0;
    let conditions = list
        .iter()
        .enumerate()
        .map(|(i, f)| condition(f, &format!("#/filters/{i}"), 1, &mut leaves))
        .collect::<Result<Vec<_>, _>>()?;
    if leaves > MAX_FILTERS {
        return Err(bad(
            "filters",
            format!("#/filters: at most {MAX_FILTERS} filters"),
        ));
    }
    Ok(conditions)
}

fn condition(
    value: &Value,
    path: &str,
    depth: u32,
    leaves: &mut usize,
) -> Result<Condition, ApiError> {
    if depth > MAX_DEPTH {
        return Err(bad(
            "filters",
            format!("{path}: filters nest at most {MAX_DEPTH} deep"),
        ));
    }
    let parts = value.as_array().filter(|p| !p.is_empty()).ok_or_else(|| {
        bad(
            "filters",
            format!("{path}: Invalid filter {}", short(value)),
        )
    })?;
    let operator = parts[0].as_str().unwrap_or_default();
    match operator {
        "and" | "or" => {
            let list = match parts.as_slice() {
                [_, Value::Array(list)] if !list.is_empty() => list,
                _ => {
                    return Err(bad(
                        "filters",
                        format!("{path}: `{operator}` takes a non-empty list of filters"),
                    ))
                }
            };
            let children = list
                .iter()
                .enumerate()
                .map(|(i, c)| condition(c, &format!("{path}/1/{i}"), depth + 1, leaves))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if operator == "and" {
                Condition::And(children)
            } else {
                Condition::Or(children)
            })
        }
        "not" => match parts.as_slice() {
            [_, inner] => Ok(Condition::Not(Box::new(condition(
                inner,
                &format!("{path}/1"),
                depth + 1,
                leaves,
            )?))),
            _ => Err(bad("filters", format!("{path}: `not` takes one filter"))),
        },
        _ => {
            *leaves += 1;
            leaf(parts, path).map(Condition::Filter)
        }
    }
}

fn leaf(parts: &[Value], path: &str) -> Result<Filter, ApiError> {
    let op = match parts[0].as_str() {
        Some("is") => FilterOp::Is,
        Some("is_not") => FilterOp::IsNot,
        Some("contains") => FilterOp::Contains,
        Some("contains_not") => FilterOp::ContainsNot,
        Some("matches") => FilterOp::Matches,
        Some("matches_not") => FilterOp::MatchesNot,
        _ => {
            return Err(bad(
                "filters",
                format!(
                    "{path}/0: Invalid filter operator {}; use is, is_not, contains, \
                     contains_not, matches, matches_not, and, or, not",
                    short(&parts[0])
                ),
            ))
        }
    };
    let (dimension, values, modifiers) = match parts {
        [_, d, v] => (d, v, None),
        [_, d, v, m] => (d, v, Some(m)),
        _ => {
            return Err(bad(
                "filters",
                format!("{path}: a filter is [operator, dimension, [values], modifiers?]"),
            ))
        }
    };
    let name = dimension
        .as_str()
        .ok_or_else(|| bad("filters", format!("{path}/1: expected a dimension name")))?;
    if name.starts_with("time") {
        return Err(bad(
            "filters",
            format!("{path}/1: time is chosen by date_range, not filtered"),
        ));
    }
    let property = super::property(name, "filters", &format!("{path}/1"))?;
    if property == Property::Event(EventProperty::Goal)
        && matches!(op, FilterOp::Matches | FilterOp::MatchesNot)
    {
        return Err(bad(
            "filters",
            format!("{path}/0: event:goal takes is, is_not, contains or contains_not"),
        ));
    }
    let values: Vec<String> = values
        .as_array()
        .filter(|v| !v.is_empty() && v.len() <= MAX_ALTERNATIVES)
        .and_then(|v| {
            v.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| {
            bad(
                "filters",
                format!("{path}/2: expected a list of 1 to {MAX_ALTERNATIVES} strings"),
            )
        })?;
    for (i, value) in values.iter().enumerate() {
        check_value(op, value, &format!("{path}/2/{i}"))?;
    }
    let ignore_case = match modifiers {
        Some(modifiers) => !case_sensitive(modifiers, &format!("{path}/3"))?,
        None => false,
    };
    let regex = matches!(op, FilterOp::Matches | FilterOp::MatchesNot);
    let values = if ignore_case && regex {
        values.iter().map(|v| case_folded(v)).collect()
    } else {
        values
    };
    Ok(Filter {
        property,
        op,
        values,
        ignore_case,
    })
}

fn check_value(op: FilterOp, value: &str, path: &str) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if chars > MAX_FILTER_VALUE {
        return Err(bad(
            "filters",
            format!("{path}: values are at most {MAX_FILTER_VALUE} characters"),
        ));
    }
    match op {
        FilterOp::Contains | FilterOp::ContainsNot if value.is_empty() => Err(bad(
            "filters",
            format!("{path}: contains needs a non-empty value"),
        )),
        FilterOp::Matches | FilterOp::MatchesNot => check_regex(value, path),
        _ => Ok(()),
    }
}

/// A regular expression ClickHouse's RE2 takes: bounded length and nesting, and a syntax
/// check here, so that a bad pattern is a 400 rather than a failed statement.
fn check_regex(pattern: &str, path: &str) -> Result<(), ApiError> {
    if pattern.is_empty() || pattern.chars().count() > MAX_REGEX {
        return Err(bad(
            "filters",
            format!("{path}: regular expressions are 1 to {MAX_REGEX} characters"),
        ));
    }
    regex_syntax::ParserBuilder::new()
        .nest_limit(MAX_DEPTH * 4)
        .build()
        .parse(pattern)
        .map(|_| ())
        .map_err(|e| {
            let reason = e.to_string();
            let reason = reason.lines().last().unwrap_or("invalid").trim();
            bad(
                "filters",
                format!(
                    "{path}: invalid regular expression {:?}: {reason}",
                    truncate(pattern)
                ),
            )
        })
}

/// `pattern` (checked already) matching whatever the letters' case: each letter `x` written
/// as the class `[xX]`, each letter in a class with its other case. Not RE2's `(?i)`: before
/// a match ClickHouse 18.16 looks for the pattern's literal text case-sensitively, and so
/// misses `Firefox` for `(?i)fire`; classes leave it no literal text to look for.
fn case_folded(pattern: &str) -> String {
    use regex_syntax::ast::{self, Ast, ClassSetItem, LiteralKind};

    /// The other case of `c`, if it has exactly one.
    fn other_case(c: char) -> Option<char> {
        let other: Vec<char> = if c.is_lowercase() {
            c.to_uppercase().collect()
        } else {
            c.to_lowercase().collect()
        };
        match other.as_slice() {
            [o] if *o != c => Some(*o),
            _ => None,
        }
    }
    /// Where the pattern's text is replaced: `(start, end, replacement)`.
    struct Folds(Vec<(usize, usize, String)>);
    impl ast::Visitor for Folds {
        type Output = Vec<(usize, usize, String)>;
        type Err = ();
        fn finish(self) -> Result<Self::Output, ()> {
            Ok(self.0)
        }
        fn visit_pre(&mut self, ast: &Ast) -> Result<(), ()> {
            if let Ast::Literal(lit) = ast {
                if let (LiteralKind::Verbatim, Some(o)) = (&lit.kind, other_case(lit.c)) {
                    let span = (lit.span.start.offset, lit.span.end.offset);
                    self.0.push((span.0, span.1, format!("[{}{o}]", lit.c)));
                }
            }
            Ok(())
        }
        fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), ()> {
            match item {
                ClassSetItem::Literal(lit) if lit.kind == LiteralKind::Verbatim => {
                    if let Some(o) = other_case(lit.c) {
                        let span = (lit.span.start.offset, lit.span.end.offset);
                        self.0.push((span.0, span.1, format!("{}{o}", lit.c)));
                    }
                }
                // `a-f` and `A-F`, for ranges of ASCII letters of one case.
                ClassSetItem::Range(r) => {
                    let (a, b) = (r.start.c, r.end.c);
                    let same_case = (a.is_ascii_lowercase() && b.is_ascii_lowercase())
                        || (a.is_ascii_uppercase() && b.is_ascii_uppercase());
                    if same_case {
                        let swap = |c: char| other_case(c).unwrap_or(c);
                        let span = (r.span.start.offset, r.span.end.offset);
                        self.0
                            .push((span.0, span.1, format!("{a}-{b}{}-{}", swap(a), swap(b))));
                    }
                }
                _ => {}
            }
            Ok(())
        }
    }
    let Ok(ast) = ast::parse::Parser::new().parse(pattern) else {
        return pattern.to_string();
    };
    let Ok(mut folds) = ast::visit(&ast, Folds(Vec::new())) else {
        return pattern.to_string();
    };
    folds.sort_by_key(|f| f.0);
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut at = 0;
    for (start, end, replacement) in folds {
        out.push_str(&pattern[at..start]);
        out.push_str(&replacement);
        at = end;
    }
    out.push_str(&pattern[at..]);
    out
}

/// Plausible's one modifier, `case_sensitive` (default true).
fn case_sensitive(modifiers: &Value, path: &str) -> Result<bool, ApiError> {
    let object = modifiers
        .as_object()
        .ok_or_else(|| bad("filters", format!("{path}: modifiers are an object")))?;
    let mut sensitive = true;
    for (key, value) in object {
        match (key.as_str(), value) {
            ("case_sensitive", Value::Bool(b)) => sensitive = *b,
            ("case_sensitive", _) => {
                return Err(bad(
                    "filters",
                    format!("{path}/case_sensitive: expected true or false"),
                ))
            }
            _ => {
                return Err(bad(
                    "filters",
                    format!("{path}: unknown modifier {:?}", truncate(key)),
                ))
            }
        }
    }
    Ok(sensitive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(value: Value) -> Result<Vec<Condition>, String> {
        parse(Some(&value)).map_err(|e| e.to_string())
    }

    #[test]
    fn nested_filters_make_a_tree() {
        let c = parsed(json!([
            ["is", "visit:country", ["DE", "FR"]],
            [
                "not",
                [
                    "or",
                    [
                        ["contains", "event:page", ["/blog"]],
                        ["matches", "event:page", ["^/d.c"]]
                    ]
                ]
            ]
        ]))
        .unwrap();
        assert_eq!(c.len(), 2);
        let Condition::Not(inner) = &c[1] else {
            panic!("{c:?}")
        };
        let Condition::Or(children) = inner.as_ref() else {
            panic!("{inner:?}")
        };
        assert_eq!(children.len(), 2);
        assert_eq!(c[0].filters()[0].values, ["DE", "FR"]);
        assert!(!c[0].filters()[0].ignore_case);
        let c = parsed(json!([["contains", "event:page", ["/Blog"], {"case_sensitive": false}]]));
        assert!(c.unwrap()[0].filters()[0].ignore_case);
    }

    #[test]
    fn case_folded_patterns_match_whatever_the_case() {
        for (pattern, folded) in [
            ("^fire", "^[fF][iI][rR][eE]"),
            (
                "^/(PRICING|Docs)$",
                "^/([Pp][Rr][Ii][Cc][Ii][Nn][Gg]|[Dd][oO][cC][sS])$",
            ),
            (r"\d+[a-c_X]\.É", r"\d+[a-cA-C_Xx]\.[Éé]"),
            (r"[^a]\w", r"[^aA]\w"),
        ] {
            assert_eq!(case_folded(pattern), folded);
            check_regex(&case_folded(pattern), "#").unwrap();
        }
    }

    #[test]
    fn bad_filters_name_their_place() {
        for (filters, expected) in [
            (json!([["equals", "event:page", ["/"]]]), "#/filters/0/0"),
            (
                json!([["is", "visit:nope", ["/"]]]),
                "#/filters/0/1: unknown property",
            ),
            (json!([["is", "event:page", []]]), "#/filters/0/2"),
            (json!([["is", "event:page", [1]]]), "#/filters/0/2"),
            (json!([["contains", "event:page", [""]]]), "#/filters/0/2/0"),
            (
                json!([["matches", "event:page", ["(a"]]]),
                "#/filters/0/2/0",
            ),
            (
                json!([["matches", "event:page", ["a".repeat(301)]]]),
                "1 to 300",
            ),
            (json!([["matches", "event:goal", ["S.*"]]]), "event:goal"),
            (json!([["and", []]]), "#/filters/0"),
            (json!([["not", ["is", "time", ["x"]]]]), "#/filters/0/1/1"),
            (
                json!([["is", "event:page", ["/"], {"case_sensitive": "no"}]]),
                "#/filters/0/3/case_sensitive",
            ),
            (
                json!([["is", "event:page", ["/"], {"case": false}]]),
                "unknown modifier",
            ),
        ] {
            let error = parsed(filters.clone()).unwrap_err();
            assert!(error.contains(expected), "{filters}: {error}");
        }
        let deep = (0..10).fold(json!(["is", "event:page", ["/"]]), |f, _| json!(["not", f]));
        assert!(parsed(json!([deep])).unwrap_err().contains("nest"));
        let many: Vec<Value> = (0..21)
            .map(|_| json!(["is", "event:page", ["/"]]))
            .collect();
        assert!(parsed(json!([["or", many]]))
            .unwrap_err()
            .contains("at most"));
    }
}
