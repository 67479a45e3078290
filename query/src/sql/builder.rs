//! The `Sql` builder: a template with `?` placeholders and the values bound to them, and the
//! row conditions every statement shares (a site's rows in a time range, runs of UTC days).

/// A value bound to a `?` of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
}

/// A statement with `?` placeholders and the values bound to them, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sql {
    pub template: String,
    pub binds: Vec<Value>,
}

impl Sql {
    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.template.push_str(text);
        self
    }

    pub(crate) fn bind_str(&mut self, value: &str) -> &mut Self {
        self.template.push('?');
        self.binds.push(Value::Str(value.to_string()));
        self
    }

    pub(crate) fn bind_int(&mut self, value: i64) -> &mut Self {
        self.template.push('?');
        self.binds.push(Value::Int(value));
        self
    }

    /// A `clickhouse` query with every value bound.
    pub fn query(&self, client: &clickhouse::Client) -> clickhouse::query::Query {
        let mut query = client.query(&self.template);
        for value in &self.binds {
            query = match value {
                Value::Str(s) => query.bind(s.as_str()),
                Value::Int(n) => query.bind(*n),
            };
        }
        query
    }

    /// The final text ClickHouse receives (before the crate appends `FORMAT RowBinary`),
    /// with values inlined by the crate's own escaping.
    pub fn final_text(&self) -> String {
        let client = clickhouse::Client::default();
        self.query(&client).sql_display().to_string()
    }
}

/// `site = ? AND` rows with `from <= timestamp < to`, with the day bounds spelled out so that
/// ClickHouse 18.16 narrows the scan by the table's `toDate(timestamp)` key, which it does not
/// derive from a `timestamp` range alone (the server's time zone, like the key's).
pub(crate) fn rows_between(sql: &mut Sql, site: &str, from: i64, to: i64) {
    sql.push("site = ").bind_str(site).push(" AND ");
    timestamps_between(sql, from, to);
}

/// `from <= timestamp < to`, with the day bounds spelled out (see `rows_between`).
pub(super) fn timestamps_between(sql: &mut Sql, from: i64, to: i64) {
    sql.push("toDate(timestamp) >= toDate(toDateTime(")
        .bind_int(from)
        .push(")) AND toDate(timestamp) <= toDate(toDateTime(")
        .bind_int(to - 1)
        .push(")) AND timestamp >= toDateTime(")
        .bind_int(from)
        .push(") AND timestamp < toDateTime(")
        .bind_int(to)
        .push(")");
}

/// Seconds of a UTC day: rolled days are UTC days since 1970.
pub const DAY: i64 = 86_400;

/// Runs of consecutive days in sorted `days`, as `(first, last)`.
pub fn day_runs(days: &[i64]) -> Vec<(i64, i64)> {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &d in days {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == d => *last = d,
            _ => runs.push((d, d)),
        }
    }
    runs
}

/// `day` within the runs of `days` (UTC days).
pub(crate) fn days_condition(sql: &mut Sql, days: &[i64]) {
    sql.push("(");
    for (i, (first, last)) in day_runs(days).into_iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        day_range(sql, first, last);
    }
    sql.push(")");
}

/// `first <= day <= last` (UTC days).
pub(crate) fn day_range(sql: &mut Sql, first: i64, last: i64) {
    sql.push("day >= toDate(toDateTime(")
        .bind_int(first * DAY)
        .push("), 'UTC') AND day <= toDate(toDateTime(")
        .bind_int(last * DAY)
        .push("), 'UTC')");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_come_in_runs() {
        assert_eq!(day_runs(&[]), vec![]);
        assert_eq!(
            day_runs(&[3, 4, 5, 7, 9, 10]),
            vec![(3, 5), (7, 7), (9, 10)]
        );
    }
}
