//! Which UTC days of visits may have changed since the last refresh, told by the events
//! table's parts rather than by reading every event: the refresh then fingerprints only those
//! days, so its cost follows what changed, not the length of the history.
//!
//! Per partition (a month of event times, `toYYYYMM(timestamp)`), a mark made of the active
//! parts' row count and their highest block number. An insert (a collector's batch, a late
//! spool, `glimpse import`) takes new, higher block numbers: its parts are the only ones above
//! the last refresh's highest block, and the days of their rows — read from those parts alone
//! (`_part`) — are the days it changed. A merge changes neither count nor blocks, so it costs
//! nothing; a part merged from blocks seen and newer ones is read whole (its days include the
//! new rows'), which costs what that merge re-covered. An `ALTER … DELETE` (erasure,
//! retention, a deleted site; a mutation, which 18.16 runs after the statement returns) lowers
//! the row count of the blocks seen: which days lost rows no part tells, so the whole month is
//! fingerprinted again, and the day before it (a visit started on a month's last day may have
//! rows in the next month; a visit lasts at most a day). Such a delete rewrites those parts
//! anyway, so reading their month costs about what the delete did. Only while a delete is new
//! or running (`system.mutations`) does a merged part count as a possible delete too. The
//! mutation version in part names is left out on purpose: every `ALTER … DELETE` gives it to
//! every part of the table, so it would make each erasure re-read all history. (Glimpse never
//! runs `ALTER … UPDATE` on events, the one change that keeps both the count and the blocks.)
//! Every write to a MergeTree table, Glimpse's or not, is a part or a mutation: nothing
//! bypasses these marks, so no periodic full fingerprint is needed (a restarted service's
//! first refresh is one).

use std::collections::{HashMap, HashSet};

use crate::sql::{Sql, DAY, MAX_VISIT_SECS};

/// What a partition's active parts look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PartitionMark {
    rows: u64,
    max_block: u64,
}

/// One active part of the events table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Part {
    name: String,
    partition: String,
    min_block: u64,
    max_block: u64,
    rows: u64,
    /// The earliest and latest event times of its rows (Unix seconds), from the part's
    /// min-max index of the partition key.
    min_time: i64,
    max_time: i64,
}

/// The active parts of `database.events`. Empty when the table has no parts of its own (a
/// `Distributed` table on a cluster, or no events yet) or a part's name is not understood:
/// the refresh then reads all events, as without marks.
pub(super) async fn active_parts(
    client: &clickhouse::Client,
    database: &str,
) -> Result<Vec<Part>, clickhouse::error::Error> {
    let rows: Vec<(String, u64, u32, u32)> =
        parts_statement(database).query(client).fetch_all().await?;
    let mut parts = Vec::with_capacity(rows.len());
    for (name, rows, min_time, max_time) in rows {
        let Some((partition, min_block, max_block)) = parse_part_name(&name) else {
            return Ok(Vec::new());
        };
        parts.push(Part {
            name,
            partition,
            min_block,
            max_block,
            rows,
            min_time: i64::from(min_time),
            max_time: i64::from(max_time),
        });
    }
    Ok(parts)
}

/// The active parts of `database.events`: name, rows, earliest and latest event time.
pub(super) fn parts_statement(database: &str) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "SELECT name, rows, toUInt32(min_time), toUInt32(max_time) FROM system.parts \
         WHERE database = ",
    )
    .bind_str(database)
    .push(" AND table = 'events' AND active");
    sql
}

/// `(partition id, min block, max block)` of a part name: `<partition>_<min block>_<max
/// block>_<level>[_<mutation>]` on 18.16 and current servers alike (the columns that hold
/// them separately differ between the two).
fn parse_part_name(name: &str) -> Option<(String, u64, u64)> {
    let fields: Vec<&str> = name.split('_').collect();
    match fields.len() {
        4 | 5 => Some((
            fields[0].to_string(),
            fields[1].parse().ok()?,
            fields[2].parse().ok()?,
        )),
        _ => None,
    }
}

/// Every partition's mark, by partition id.
pub(super) fn partition_marks(parts: &[Part]) -> HashMap<String, PartitionMark> {
    let mut marks: HashMap<String, PartitionMark> = HashMap::new();
    for part in parts {
        let mark = marks
            .entry(part.partition.clone())
            .or_insert(PartitionMark {
                rows: 0,
                max_block: 0,
            });
        mark.rows += part.rows;
        mark.max_block = mark.max_block.max(part.max_block);
    }
    marks
}

/// What changed between the marks `before` and the active `parts`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Changes<'a> {
    /// Day ranges (inclusive day numbers) to read whole: months that lost rows.
    pub ranges: Vec<(i64, i64)>,
    /// Parts written since `before`: the days of their rows changed.
    pub new_parts: Vec<&'a Part>,
}

/// What changed since `before`; `None` when a changed partition id is not a month
/// (`YYYYMM`): then every day is read. `deleted` tells whether rows may have been deleted
/// since (a mutation of the events not yet finished at the last refresh).
pub(super) fn changes<'a>(
    before: &HashMap<String, PartitionMark>,
    parts: &'a [Part],
    deleted: bool,
) -> Option<Changes<'a>> {
    let now = partition_marks(parts);
    let changed: HashSet<&String> = before
        .keys()
        .chain(now.keys())
        .filter(|p| before.get(*p) != now.get(*p))
        .collect();
    let mut found = Changes::default();
    for partition in changed {
        let seen = before.get(partition);
        let (mut old_rows, mut straddling_rows) = (0, 0);
        let mut to_read = Vec::new();
        for part in parts.iter().filter(|p| &p.partition == partition) {
            match seen {
                // Blocks the last refresh saw, possibly merged or mutated since.
                Some(m) if part.max_block <= m.max_block => old_rows += part.rows,
                // A merge of blocks it saw with newer ones: its rows hold the new rows' days.
                Some(m) if part.min_block <= m.max_block => {
                    straddling_rows += part.rows;
                    to_read.push(part);
                }
                // Written after it.
                _ => to_read.push(part),
            }
        }
        let seen_rows = seen.map_or(0, |m| m.rows);
        // Without a straddling part, the rows of the blocks seen tell a delete exactly; with
        // one, only the absence of any delete since does.
        let kept = if straddling_rows == 0 {
            old_rows == seen_rows
        } else {
            !deleted && old_rows + straddling_rows >= seen_rows
        };
        if kept {
            found.new_parts.extend(to_read);
        } else {
            let (first, last) = month_days(partition)?;
            found.ranges.push((first - 1, last));
        }
    }
    Some(found)
}

/// The ids of the mutations of `database.events` (the `ALTER … DELETE`s of erasure,
/// retention and site deletion), each with whether it has finished.
pub(super) fn mutations_statement(database: &str) -> Sql {
    let mut sql = Sql::default();
    sql.push("SELECT mutation_id, is_done FROM system.mutations WHERE database = ")
        .bind_str(database)
        .push(" AND table = 'events'");
    sql
}

/// The mutations of `database.events`: every one listed, and those finished.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Mutations {
    pub all: HashSet<String>,
    pub done: HashSet<String>,
}

impl Mutations {
    /// Whether rows may have been deleted after `seen` (finished mutations read before the
    /// last refresh's parts), up to `later` (the mutations read after this refresh's parts):
    /// a mutation running, or one not finished by then, or one that appeared meanwhile.
    pub fn deleted_since(&self, seen: &HashSet<String>, later: &Mutations) -> bool {
        self.all.len() > self.done.len() || !self.done.is_subset(seen) || later.all != self.all
    }
}

/// The mutations of `database.events`.
pub(super) async fn mutations(
    client: &clickhouse::Client,
    database: &str,
) -> Result<Mutations, clickhouse::error::Error> {
    let rows: Vec<(String, u8)> = mutations_statement(database)
        .query(client)
        .fetch_all()
        .await?;
    let mut mutations = Mutations::default();
    for (id, done) in rows {
        if done != 0 {
            mutations.done.insert(id.clone());
        }
        mutations.all.insert(id);
    }
    Ok(mutations)
}

/// The days a part's rows may have visits started on, told by its event times alone: from
/// a visit's length before its first event to its last event's day.
pub(super) fn part_days(part: &Part) -> (i64, i64) {
    (
        (part.min_time - MAX_VISIT_SECS).div_euclid(DAY),
        part.max_time.div_euclid(DAY),
    )
}

/// The UTC days of visit starts (`YYYY-MM-DD`) of the rows of the named parts, with each
/// part's name: ClickHouse reads those parts only.
pub(super) fn new_rows_days_statement(database: &str, parts: &[&str]) -> Sql {
    let mut sql = Sql::default();
    sql.push("SELECT DISTINCT _part, toString(toDate(visit_start, 'UTC')) FROM ")
        .push(database)
        .push(".events WHERE _part IN (");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind_str(part);
    }
    sql.push(")");
    sql
}

/// The days (inclusive ranges of day numbers) the rows of `parts` have visits started on. A
/// part merged or mutated away since it was listed is no longer there to read: its days are
/// then told by its event times ([`part_days`]).
pub(super) async fn new_rows_days(
    client: &clickhouse::Client,
    database: &str,
    parts: &[&Part],
) -> Result<Vec<(i64, i64)>, clickhouse::error::Error> {
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    let mut found: Vec<(String, String)> = Vec::new();
    // A few hundred names a statement keeps it far below ClickHouse's `max_query_size`.
    for names in names.chunks(400) {
        found.extend(
            new_rows_days_statement(database, names)
                .query(client)
                .fetch_all::<(String, String)>()
                .await?,
        );
    }
    let mut ranges = Vec::new();
    let mut read: HashSet<&str> = HashSet::new();
    for (part, day) in &found {
        read.insert(part);
        if let Some(day) = super::day_number(day) {
            ranges.push((day, day));
        }
    }
    ranges.extend(
        parts
            .iter()
            .filter(|p| !read.contains(p.name.as_str()))
            .map(|p| part_days(p)),
    );
    Ok(ranges)
}

/// The UTC day numbers (days since 1970) to read: `ranges` that changed, and the days that
/// settled between the last refresh's `before_until` and `until`, as sorted, disjoint
/// inclusive ranges, none at or after `until`.
pub(super) fn days_to_read(
    mut ranges: Vec<(i64, i64)>,
    before_until: i64,
    until: i64,
) -> Vec<(i64, i64)> {
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
    merged
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

    fn day(text: &str) -> i64 {
        let date: jiff::civil::Date = text.parse().unwrap();
        i64::from(
            date.since(jiff::civil::date(1970, 1, 1))
                .unwrap()
                .get_days(),
        )
    }

    /// A part of `rows` rows of blocks `min..=max`, its events on the days `first..=last`.
    fn part(name: &str, rows: u64, (first, last): (&str, &str)) -> Part {
        let (partition, min_block, max_block) = parse_part_name(name).unwrap();
        Part {
            name: name.into(),
            partition,
            min_block,
            max_block,
            rows,
            min_time: day(first) * DAY + 3600,
            max_time: day(last) * DAY + 7200,
        }
    }

    fn names<'a>(changes: &Changes<'a>) -> Vec<&'a str> {
        let mut names: Vec<&str> = changes.new_parts.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn part_names_of_both_server_generations() {
        assert_eq!(
            parse_part_name("202603_1_5_1"),
            Some(("202603".into(), 1, 5))
        );
        assert_eq!(
            parse_part_name("202603_1_5_1_9"),
            Some(("202603".into(), 1, 5))
        );
        assert_eq!(parse_part_name("all_0_1_0"), Some(("all".into(), 0, 1)));
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
    fn inserts_are_their_new_parts_and_merges_nothing() {
        let seen = vec![
            part("202602_1_4_1", 10, ("2026-02-01", "2026-02-28")),
            part("202603_5_9_1", 20, ("2026-03-01", "2026-03-31")),
        ];
        let before = partition_marks(&seen);
        assert_eq!(changes(&before, &seen, false), Some(Changes::default()));
        // The same rows merged into another layout: nothing.
        let merged = vec![
            part("202602_1_4_2", 10, ("2026-02-01", "2026-02-28")),
            part("202603_5_7_2", 12, ("2026-03-01", "2026-03-20")),
            part("202603_8_9_1", 8, ("2026-03-10", "2026-03-31")),
        ];
        assert_eq!(changes(&before, &merged, false), Some(Changes::default()));
        // A late row in March, new parts in a month not seen before (one already merged with
        // another new one): those parts, nothing read whole.
        let mut now = merged.clone();
        now.push(part("202603_10_10_0", 1, ("2026-03-12", "2026-03-12")));
        now.push(part("202511_11_12_1", 2, ("2025-11-15", "2025-11-16")));
        let found = changes(&before, &now, false).unwrap();
        assert_eq!(names(&found), ["202511_11_12_1", "202603_10_10_0"]);
        assert!(found.ranges.is_empty());
        // A partition that is not a month is fine as long as only new parts are in it.
        let all = vec![part("all_0_0_0", 1, ("2026-03-01", "2026-03-01"))];
        assert_eq!(
            names(&changes(&HashMap::new(), &all, false).unwrap()),
            ["all_0_0_0"]
        );
    }

    #[test]
    fn deletes_and_merges_across_the_last_refresh_read_their_month() {
        let seen = vec![
            part("202602_1_4_1", 10, ("2026-02-01", "2026-02-28")),
            part("202603_5_9_1", 20, ("2026-03-01", "2026-03-31")),
        ];
        let before = partition_marks(&seen);
        let march = (day("2026-02-28"), day("2026-03-31"));
        let february = (day("2026-01-31"), day("2026-02-28"));
        // An erasure in February (fewer rows, a mutated part): February and January 31.
        let erased = vec![
            part("202602_1_4_1_13", 9, ("2026-02-01", "2026-02-28")),
            seen[1].clone(),
        ];
        let found = changes(&before, &erased, true).unwrap();
        assert_eq!((names(&found), found.ranges), (vec![], vec![february]));
        // A partition gone (retention): its month.
        let found = changes(&before, &seen[1..], true).unwrap();
        assert_eq!(found.ranges, vec![february]);
        // A late row merged with older parts before the refresh saw it: that merged part is
        // read, unless a delete may have run since (then March whole).
        let merged = vec![
            seen[0].clone(),
            part("202603_5_10_2", 21, ("2026-03-01", "2026-03-31")),
        ];
        let found = changes(&before, &merged, false).unwrap();
        assert_eq!(
            (names(&found), found.ranges),
            (vec!["202603_5_10_2"], vec![])
        );
        let found = changes(&before, &merged, true).unwrap();
        assert_eq!((names(&found), found.ranges), (vec![], vec![march]));
        // A merged part with fewer rows than were seen: a delete, whatever the mutations say.
        let shrunk = vec![
            seen[0].clone(),
            part("202603_5_10_2", 19, ("2026-03-01", "2026-03-31")),
        ];
        let found = changes(&before, &shrunk, false).unwrap();
        assert_eq!((names(&found), found.ranges), (vec![], vec![march]));
        // A delete in March and a late row: March whole (the new part's days are in it).
        let mut both = vec![
            seen[0].clone(),
            part("202603_5_9_1_14", 19, ("2026-03-01", "2026-03-31")),
        ];
        both.push(part("202603_15_15_0", 1, ("2026-03-12", "2026-03-12")));
        let found = changes(&before, &both, true).unwrap();
        assert_eq!(found.ranges, vec![march]);
        // A changed partition that is not a month: every day is read.
        let all = vec![part("all_1_4_1_5", 1, ("2026-03-01", "2026-03-01"))];
        let before_all = partition_marks(&[part("all_1_4_1", 2, ("2026-03-01", "2026-03-01"))]);
        assert_eq!(changes(&before_all, &all, true), None);
    }

    #[test]
    fn deletes_are_told_by_mutations_running_new_or_appearing() {
        let ids = |ids: &[&str]| ids.iter().map(|id| id.to_string()).collect::<HashSet<_>>();
        let of = |all: &[&str], done: &[&str]| Mutations {
            all: ids(all),
            done: ids(done),
        };
        let seen = ids(&["mutation_4.txt"]);
        let quiet = of(&["mutation_4.txt"], &["mutation_4.txt"]);
        assert!(!quiet.deleted_since(&seen, &quiet));
        // One running, one finished since the last refresh, one appearing while the parts
        // were read.
        let running = of(&["mutation_4.txt", "mutation_9.txt"], &["mutation_4.txt"]);
        assert!(running.deleted_since(&seen, &running));
        let finished = of(
            &["mutation_4.txt", "mutation_9.txt"],
            &["mutation_4.txt", "mutation_9.txt"],
        );
        assert!(finished.deleted_since(&seen, &finished));
        assert!(quiet.deleted_since(&seen, &finished));
        // Old finished ones forgotten by the server change nothing.
        let forgotten = of(&[], &[]);
        assert!(!forgotten.deleted_since(&seen, &forgotten));
    }

    #[test]
    fn a_part_read_no_more_is_told_by_its_event_times() {
        let late = part("202603_10_10_0", 1, ("2026-03-12", "2026-03-13"));
        assert_eq!(part_days(&late), (day("2026-03-11"), day("2026-03-13")));
    }

    #[test]
    fn changed_and_newly_settled_days_sorted_and_merged() {
        let until = day("2026-04-10") * DAY;
        // Nothing changed, no day settled: nothing to read.
        assert_eq!(days_to_read(vec![], until, until), vec![]);
        // One day, and the day settled since the last refresh.
        assert_eq!(
            days_to_read(
                vec![(day("2026-03-12"), day("2026-03-12"))],
                until - DAY,
                until
            ),
            vec![
                (day("2026-03-12"), day("2026-03-12")),
                (day("2026-04-09"), day("2026-04-09"))
            ]
        );
        // Days not yet settled are never read; overlapping and adjacent ranges merge.
        assert_eq!(
            days_to_read(
                vec![
                    (day("2026-03-31"), day("2026-04-30")),
                    (day("2026-03-12"), day("2026-03-12")),
                    (day("2026-03-13"), day("2026-03-14")),
                    (day("2026-03-14"), day("2026-03-14")),
                ],
                until,
                until
            ),
            vec![
                (day("2026-03-12"), day("2026-03-14")),
                (day("2026-03-31"), day("2026-04-09"))
            ]
        );
    }
}
