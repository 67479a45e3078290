//! Filter conditions as a tree: single filters combined with `and`, `or` and `not` (Stats API
//! v2). A request's conditions are a list joined by `and`; v1's flat filters are a list of
//! leaves. The SQL builder writes the tree with negations pushed down to the leaves, so that
//! every leaf keeps its own rules (engagement reports stay with their page view, goals are
//! written as goal conditions).

use crate::params::{EventProperty, Filter, FilterOp, Property};

/// One condition: a filter, or filters combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Filter(Filter),
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
}

impl From<Filter> for Condition {
    fn from(filter: Filter) -> Self {
        Condition::Filter(filter)
    }
}

impl Condition {
    /// Every filter in the tree, depth first.
    pub fn filters(&self) -> Vec<&Filter> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Filter>) {
        match self {
            Condition::Filter(f) => out.push(f),
            Condition::And(cs) | Condition::Or(cs) => cs.iter().for_each(|c| c.collect(out)),
            Condition::Not(c) => c.collect(out),
        }
    }

    /// Whether any filter of the tree is on an event property.
    pub fn has_event_filter(&self) -> bool {
        self.filters()
            .iter()
            .any(|f| matches!(f.property, Property::Event(_)))
    }

    /// Whether this is a single goal filter (what `conversion_rate`'s denominator leaves out).
    pub fn is_goal_filter(&self) -> bool {
        matches!(self, Condition::Filter(f) if f.property == Property::Event(EventProperty::Goal))
    }
}

/// Every filter of a list of conditions.
pub fn all_filters(conditions: &[Condition]) -> impl Iterator<Item = &Filter> {
    conditions.iter().flat_map(Condition::filters)
}

/// The operator that holds exactly where `op` does not.
pub fn negated(op: FilterOp) -> FilterOp {
    match op {
        FilterOp::Is => FilterOp::IsNot,
        FilterOp::IsNot => FilterOp::Is,
        FilterOp::Contains => FilterOp::ContainsNot,
        FilterOp::ContainsNot => FilterOp::Contains,
        FilterOp::Matches => FilterOp::MatchesNot,
        FilterOp::MatchesNot => FilterOp::Matches,
    }
}

/// Whether `op` is a negative operator (holds where none of the values does).
pub fn is_negative(op: FilterOp) -> bool {
    matches!(
        op,
        FilterOp::IsNot | FilterOp::ContainsNot | FilterOp::MatchesNot
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::parse_filters;

    #[test]
    fn the_tree_lists_its_filters_and_goals() {
        let leaves: Vec<Condition> = parse_filters("event:goal==Signup;visit:country==DE")
            .unwrap()
            .into_iter()
            .map(Condition::from)
            .collect();
        assert!(leaves[0].is_goal_filter() && !leaves[1].is_goal_filter());
        let tree = Condition::Not(Box::new(Condition::Or(leaves.clone())));
        assert_eq!(tree.filters().len(), 2);
        assert!(tree.has_event_filter());
        assert!(!tree.is_goal_filter());
        assert!(!leaves[1].has_event_filter());
        for op in [FilterOp::Is, FilterOp::Contains, FilterOp::Matches] {
            assert!(!is_negative(op) && is_negative(negated(op)));
            assert_eq!(negated(negated(op)), op);
        }
    }
}
