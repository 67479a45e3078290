//! Which UTC days of visits may have changed since the last refresh, told by the events
//! table's parts rather than by reading every event: the refresh then fingerprints only those
//! days, so its cost follows what changed, not the length of the history.
//!
//! Per partition (a month of event times, `toYYYYMM(timestamp)`), a mark made of the active
//! parts' row count and their highest block number. An insert takes a new, higher block
//! number; an `ALTER … DELETE` (erasure, retention, a deleted site) lowers the row count of the
//! partitions it deletes from; a merge changes neither, so it costs nothing. The mutation
//! version is left out on purpose: every `ALTER … DELETE` gives it to every part of the table,
//! so it would make each erasure re-read all history. (Glimpse never runs `ALTER … UPDATE` on
//! events, the one change that keeps both the count and the blocks.) A changed month's days are fingerprinted again, and so is
//! the day before it: a visit started on a month's last day may have rows in the next month (a
//! visit lasts at most a day).

use std::collections::HashMap;

use crate::sql::{Sql, DAY};

/// What a partition's active parts look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PartitionMark {
    rows: u64,
    max_block: u64,
}

/// Every partition of `database.events` with active parts, by partition id. Empty when the
/// table has no parts of its own (a `Distributed` table on a cluster, or no events yet): the
/// refresh then reads all events, as without marks.
pub(super) async fn partition_marks(
    client: &clickhouse::Client,
    database: &str,
) -> Result<HashMap<String, PartitionMark>, clickhouse::error::Error> {
    // Part names are `<partition>_<min block>_<max block>_<level>[_<mutation>]` on 18.16 and
    // current servers alike (the columns that hold them separately differ between the two).
    let parts: Vec<(String, u64)> = parts_statement(database).query(client).fetch_all().await?;
    let mut marks: HashMap<String, PartitionMark> = HashMap::new();
    for (name, rows) in parts {
        let Some((partition, max_block)) = parse_part_name(&name) else {
            // A name this code does not understand: no marks, every event is read.
            return Ok(HashMap::new());
        };
        let mark = marks.entry(partition).or_insert(PartitionMark {
            rows: 0,
            max_block: 0,
        });
        mark.rows += rows;
        mark.max_block = mark.max_block.max(max_block);
    }
    Ok(marks)
}

/// The active parts of `database.events`: name and rows.
pub(super) fn parts_statement(database: &str) -> Sql {
    let mut sql = Sql::default();
    sql.push("SELECT name, rows FROM system.parts WHERE database = ")
        .bind_str(database)
        .push(" AND table = 'events' AND active");
    sql
}

/// `(partition id, max block)` of a part name.
fn parse_part_name(name: &str) -> Option<(String, u64)> {
    let fields: Vec<&str> = name.split('_').collect();
    match fields.len() {
        4 | 5 => Some((fields[0].to_string(), fields[2].parse().ok()?)),
        _ => None,
    }
}

/// The UTC day numbers (days since 1970) that may have changed between `before` (marks and
/// `until` of the last refresh) and `now_marks`/`until`, as sorted, disjoint inclusive ranges;
/// `None` when a partition id is not a month (`YYYYMM`): then every day is read.
pub(super) fn changed_days(
    before: &HashMap<String, PartitionMark>,
    before_until: i64,
    now_marks: &HashMap<String, PartitionMark>,
    until: i64,
) -> Option<Vec<(i64, i64)>> {
    let mut ranges = Vec::new();
    for partition in before.keys().chain(now_marks.keys()) {
        if before.get(partition) != now_marks.get(partition) {
            let (first, last) = month_days(partition)?;
            ranges.push((first - 1, last));
        }
    }
    // Days that settled since the last refresh are new to the rollup.
    let (settled_from, last_settled) = (before_until.div_euclid(DAY), until.div_euclid(DAY) - 1);
    if settled_from <= last_settled {
        ranges.push((settled_from, last_settled));
    }
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for (first, last) in ranges {
        let last = last.min(last_settled);
        if first > last {
            continue;
        }
        match merged.last_mut() {
            Some(previous) if first <= previous.1 + 1 => previous.1 = previous.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    Some(merged)
}

/// The first and last day numbers of the month a `YYYYMM` partition id names.
fn month_days(partition: &str) -> Option<(i64, i64)> {
    if partition.len() != 6 {
        return None;
    }
    let year: i16 = partition[..4].parse().ok()?;
    let month: i8 = partition[4..].parse().ok()?;
    let first = jiff::civil::Date::new(year, month, 1).ok()?;
    let last = first.last_of_month();
    let number = |d: jiff::civil::Date| {
        d.since(jiff::civil::date(1970, 1, 1))
            .ok()
            .map(|span| i64::from(span.get_days()))
    };
    Some((number(first)?, number(last)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(rows: u64, max_block: u64) -> PartitionMark {
        PartitionMark { rows, max_block }
    }

    fn day(text: &str) -> i64 {
        let date: jiff::civil::Date = text.parse().unwrap();
        i64::from(
            date.since(jiff::civil::date(1970, 1, 1))
                .unwrap()
                .get_days(),
        )
    }

    #[test]
    fn part_names_of_both_server_generations() {
        assert_eq!(parse_part_name("202603_1_5_1"), Some(("202603".into(), 5)));
        assert_eq!(
            parse_part_name("202603_1_5_1_9"),
            Some(("202603".into(), 5))
        );
        assert_eq!(parse_part_name("all_1_1_0"), Some(("all".into(), 1)));
        assert_eq!(parse_part_name("weird"), None);
    }

    #[test]
    fn months_are_their_days() {
        assert_eq!(
            month_days("202602"),
            Some((day("2026-02-01"), day("2026-02-28")))
        );
        assert_eq!(
            month_days("202402"),
            Some((day("2024-02-01"), day("2024-02-29")))
        );
        assert_eq!(month_days("all"), None);
    }

    #[test]
    fn a_changed_month_and_the_day_before_it_and_newly_settled_days() {
        let until = day("2026-04-10") * DAY;
        let before = HashMap::from([
            ("202602".to_string(), mark(10, 4)),
            ("202603".to_string(), mark(20, 9)),
        ]);
        // Nothing changed, no day settled: nothing to read.
        assert_eq!(changed_days(&before, until, &before, until), Some(vec![]));
        // A merge (same rows, same highest block, another part layout) changes nothing.
        assert_eq!(
            changed_days(&before, until, &before.clone(), until),
            Some(vec![])
        );
        // A late row in March: March and Feb 28.
        let mut now = before.clone();
        now.insert("202603".into(), mark(21, 10));
        assert_eq!(
            changed_days(&before, until, &now, until),
            Some(vec![(day("2026-02-28"), day("2026-03-31"))])
        );
        // An erasure in February (fewer rows): January's last day too.
        let mut now = before.clone();
        now.insert("202602".into(), mark(9, 4));
        assert_eq!(
            changed_days(&before, until, &now, until),
            Some(vec![(day("2026-01-31"), day("2026-02-28"))])
        );
        // A partition gone (retention) counts as changed; a day settling since is added.
        let mut now = before.clone();
        now.remove("202602");
        assert_eq!(
            changed_days(&before, until - DAY, &now, until),
            Some(vec![
                (day("2026-01-31"), day("2026-02-28")),
                (day("2026-04-09"), day("2026-04-09"))
            ])
        );
        // Days not yet settled are never read; adjacent ranges merge.
        let mut now = before.clone();
        now.insert("202604".into(), mark(5, 11));
        now.insert("202603".into(), mark(21, 10));
        assert_eq!(
            changed_days(&before, until, &now, until),
            Some(vec![(day("2026-02-28"), day("2026-04-09"))])
        );
        // A partition that is not a month: read everything.
        let now = HashMap::from([("all".to_string(), mark(1, 1))]);
        assert_eq!(changed_days(&before, until, &now, until), None);
    }
}
