//! Stats API parameters (Plausible's Stats API v1, plus Glimpse's additions), parsed into
//! typed values. Anything that does not parse is a 400 naming the parameter; nothing a client
//! sends reaches SQL except as a bound value.

use std::collections::HashMap;

use jiff::civil::Date;

use crate::error::ApiError;

/// Which question is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Aggregate,
    Timeseries,
    Breakdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// The last 30 minutes.
    Realtime,
    Day,
    SevenDays,
    ThirtyDays,
    Month,
    SixMonths,
    TwelveMonths,
    /// Both dates inclusive, in the site's time zone.
    Custom(Date, Date),
}

/// What a period is compared with (`comparison=` or `compare=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// The period just before, of the same kind (`period::previous`).
    PreviousPeriod,
    /// The same dates a year earlier; February 29 becomes February 28.
    YearOverYear,
    /// `compare_from` to `compare_to`, both inclusive, in the site's time zone.
    Custom(Date, Date),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// Only with `period=realtime`.
    Minute,
    Hour,
    Date,
    /// Weeks start on Monday.
    Week,
    Month,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Visitors,
    Visits,
    Pageviews,
    ViewsPerVisit,
    BounceRate,
    VisitDuration,
    Events,
    TimeOnPage,
    ScrollDepth,
    /// Visitors who reached a goal, in percent of all visitors (with a goal filter or the
    /// `event:goal` breakdown).
    ConversionRate,
}

impl Metric {
    pub const ALL: [Metric; 10] = [
        Metric::Visitors,
        Metric::Visits,
        Metric::Pageviews,
        Metric::ViewsPerVisit,
        Metric::BounceRate,
        Metric::VisitDuration,
        Metric::Events,
        Metric::TimeOnPage,
        Metric::ScrollDepth,
        Metric::ConversionRate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Visitors => "visitors",
            Metric::Visits => "visits",
            Metric::Pageviews => "pageviews",
            Metric::ViewsPerVisit => "views_per_visit",
            Metric::BounceRate => "bounce_rate",
            Metric::VisitDuration => "visit_duration",
            Metric::Events => "events",
            Metric::TimeOnPage => "time_on_page",
            Metric::ScrollDepth => "scroll_depth",
            Metric::ConversionRate => "conversion_rate",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == text)
    }

    /// Metrics whose comparison is a difference in points rather than a change in percent.
    pub fn is_rate(self) -> bool {
        matches!(self, Metric::BounceRate | Metric::ConversionRate)
    }
}

/// A property of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventProperty {
    Page,
    Name,
    Hostname,
    /// The site's goals the event reached (see `glimpse_core::goals`).
    Goal,
    /// A custom property, by name.
    Prop(String),
}

/// A property of a visit, taken from its first event (entry page, source, campaign, place,
/// device) or its last page view (exit page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VisitProperty {
    EntryPage,
    ExitPage,
    Source,
    Referrer,
    UtmSource,
    UtmMedium,
    UtmCampaign,
    UtmTerm,
    UtmContent,
    Country,
    Region,
    City,
    Device,
    Browser,
    BrowserVersion,
    Os,
    OsVersion,
}

impl VisitProperty {
    pub const ALL: [VisitProperty; 17] = [
        VisitProperty::EntryPage,
        VisitProperty::ExitPage,
        VisitProperty::Source,
        VisitProperty::Referrer,
        VisitProperty::UtmSource,
        VisitProperty::UtmMedium,
        VisitProperty::UtmCampaign,
        VisitProperty::UtmTerm,
        VisitProperty::UtmContent,
        VisitProperty::Country,
        VisitProperty::Region,
        VisitProperty::City,
        VisitProperty::Device,
        VisitProperty::Browser,
        VisitProperty::BrowserVersion,
        VisitProperty::Os,
        VisitProperty::OsVersion,
    ];

    /// The name after `visit:`, which is also the breakdown's result key.
    pub fn name(self) -> &'static str {
        match self {
            VisitProperty::EntryPage => "entry_page",
            VisitProperty::ExitPage => "exit_page",
            VisitProperty::Source => "source",
            VisitProperty::Referrer => "referrer",
            VisitProperty::UtmSource => "utm_source",
            VisitProperty::UtmMedium => "utm_medium",
            VisitProperty::UtmCampaign => "utm_campaign",
            VisitProperty::UtmTerm => "utm_term",
            VisitProperty::UtmContent => "utm_content",
            VisitProperty::Country => "country",
            VisitProperty::Region => "region",
            VisitProperty::City => "city",
            VisitProperty::Device => "device",
            VisitProperty::Browser => "browser",
            VisitProperty::BrowserVersion => "browser_version",
            VisitProperty::Os => "os",
            VisitProperty::OsVersion => "os_version",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Property {
    Event(EventProperty),
    Visit(VisitProperty),
}

/// Longest custom property name accepted (the collector's default limit).
const MAX_PROP_NAME: usize = 300;
/// Longest filter value accepted.
pub(crate) const MAX_FILTER_VALUE: usize = 2000;
pub(crate) const MAX_FILTERS: usize = 20;
pub(crate) const MAX_ALTERNATIVES: usize = 50;

impl Property {
    pub fn parse(text: &str, param: &'static str) -> Result<Self, ApiError> {
        if let Some(name) = text.strip_prefix("event:props:") {
            if name.is_empty() || name.chars().count() > MAX_PROP_NAME {
                return Err(ApiError::bad(
                    param,
                    format!("custom property names are 1 to {MAX_PROP_NAME} characters"),
                ));
            }
            return Ok(Property::Event(EventProperty::Prop(name.to_string())));
        }
        let property = match text {
            "event:page" => Property::Event(EventProperty::Page),
            "event:name" => Property::Event(EventProperty::Name),
            "event:hostname" => Property::Event(EventProperty::Hostname),
            "event:goal" => Property::Event(EventProperty::Goal),
            _ => match text
                .strip_prefix("visit:")
                .and_then(|name| VisitProperty::ALL.into_iter().find(|p| p.name() == name))
            {
                Some(p) => Property::Visit(p),
                None => {
                    return Err(ApiError::bad(
                        param,
                        format!(
                            "unknown property {:?}; use event:page, event:name, event:hostname, \
                             event:goal, event:props:NAME or visit:{}",
                            truncate(text),
                            VisitProperty::ALL.map(|p| p.name()).join("|")
                        ),
                    ))
                }
            },
        };
        Ok(property)
    }

    /// The key of the breakdown's result rows: `page`, `source`, the custom property's name…
    pub fn result_key(&self) -> &str {
        match self {
            Property::Event(EventProperty::Page) => "page",
            Property::Event(EventProperty::Name) => "name",
            Property::Event(EventProperty::Hostname) => "hostname",
            Property::Event(EventProperty::Goal) => "goal",
            Property::Event(EventProperty::Prop(name)) => name,
            Property::Visit(p) => p.name(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    /// `==`: equals one of the values.
    Is,
    /// `!=`: equals none of the values.
    IsNot,
    /// `~`: contains one of the values (case-sensitive).
    Contains,
    /// Contains none of the values (Stats API v2).
    ContainsNot,
    /// Matches one of the regular expressions (RE2 syntax, ClickHouse's `match`; v2).
    Matches,
    /// Matches none of the regular expressions (v2).
    MatchesNot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub property: Property,
    pub op: FilterOp,
    /// One or more alternatives (`a|b`).
    pub values: Vec<String>,
    /// Values match whatever their letters' case (v2's `{"case_sensitive": false}`).
    pub ignore_case: bool,
}

/// Filters combined with `and`, `or` and `not` (Stats API v2). A request's conditions are a
/// list joined by `and`; v1's are single filters. The SQL builder writes the tree with
/// negations pushed down to the filters, so that each keeps its own rules (engagement
/// reports stay with their page view, goals are written as goal conditions).
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

impl FilterOp {
    /// The operator that holds exactly where this one does not.
    pub fn negated(self) -> FilterOp {
        match self {
            FilterOp::Is => FilterOp::IsNot,
            FilterOp::IsNot => FilterOp::Is,
            FilterOp::Contains => FilterOp::ContainsNot,
            FilterOp::ContainsNot => FilterOp::Contains,
            FilterOp::Matches => FilterOp::MatchesNot,
            FilterOp::MatchesNot => FilterOp::Matches,
        }
    }

    /// Whether this is a negative operator (holds where none of the values does).
    pub fn is_negative(self) -> bool {
        matches!(
            self,
            FilterOp::IsNot | FilterOp::ContainsNot | FilterOp::MatchesNot
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

/// What a breakdown is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Metric(Metric),
    /// The property's value.
    Property,
    /// One part of a several-dimension key (Stats API v2), by its index.
    Part(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub descending: bool,
}

/// One request, fully typed.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsParams {
    pub site_id: String,
    pub period: Period,
    /// The reference date of `day`, `7d`, …; `None`: today in the site's time zone.
    pub date: Option<Date>,
    pub interval: Interval,
    pub metrics: Vec<Metric>,
    pub property: Option<Property>,
    /// Joined by `and`; v1's are single filters, v2's may nest `and`, `or` and `not`.
    pub filters: Vec<Condition>,
    /// What the period is compared with, if anything.
    pub compare: Option<Comparison>,
    /// `with_imported=true`: add the site's imported aggregates (Plausible's export) where
    /// they can answer the question. Default false, as in Plausible's API v1.
    pub with_imported: bool,
    /// `sampling=off`: exact figures even where the period is large enough to be sampled
    /// (`sampling_threshold_rows`). Default false.
    pub exact: bool,
    pub limit: u64,
    /// Rows skipped before the page (v1: `(page - 1) * limit`).
    pub offset: u64,
    /// Breakdowns: by each in turn, then by the property's value.
    pub sort: Vec<Sort>,
    pub format: Format,
}

pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 1000;
const MAX_PAGE: u64 = 100_000;

/// Parses the query string of a stats request. Unknown parameters are ignored, as Plausible
/// does.
pub fn parse(endpoint: Endpoint, query: &HashMap<String, String>) -> Result<StatsParams, ApiError> {
    let get = |name: &str| query.get(name).map(String::as_str);
    let site_id = parse_site_id(get("site_id"))?;

    let period = match get("period").unwrap_or("30d") {
        "realtime" => Period::Realtime,
        "day" => Period::Day,
        "7d" => Period::SevenDays,
        "30d" => Period::ThirtyDays,
        "month" => Period::Month,
        "6mo" => Period::SixMonths,
        "12mo" => Period::TwelveMonths,
        "custom" => {
            let text = get("date").ok_or_else(|| {
                ApiError::bad("date", "period=custom needs date=YYYY-MM-DD,YYYY-MM-DD")
            })?;
            let (a, b) = text.split_once(',').ok_or_else(|| {
                ApiError::bad("date", "period=custom needs date=YYYY-MM-DD,YYYY-MM-DD")
            })?;
            let (from, to) = (parse_date(a)?, parse_date(b)?);
            if from > to {
                return Err(ApiError::bad("date", "the first date is after the second"));
            }
            Period::Custom(from, to)
        }
        other => {
            return Err(ApiError::bad(
                "period",
                format!(
                    "{:?} is not one of realtime, day, 7d, 30d, month, 6mo, 12mo, custom",
                    truncate(other)
                ),
            ))
        }
    };
    let date = match (period, get("date")) {
        (Period::Custom(..), _) | (_, None) => None,
        (Period::Realtime, Some(_)) => {
            return Err(ApiError::bad("date", "period=realtime takes no date"))
        }
        (_, Some(text)) => Some(parse_date(text)?),
    };

    let default_interval = match period {
        Period::Realtime => Interval::Minute,
        Period::SixMonths | Period::TwelveMonths => Interval::Month,
        _ => Interval::Date,
    };
    let interval = match get("interval") {
        None => default_interval,
        Some(text) => {
            let interval = match text {
                "minute" => Interval::Minute,
                "hour" => Interval::Hour,
                "date" | "day" => Interval::Date,
                "week" => Interval::Week,
                "month" => Interval::Month,
                other => {
                    return Err(ApiError::bad(
                        "interval",
                        format!(
                            "{:?} is not one of hour, date, week, month",
                            truncate(other)
                        ),
                    ))
                }
            };
            if (interval == Interval::Minute) != (period == Period::Realtime) {
                return Err(ApiError::bad(
                    "interval",
                    "interval=minute goes with period=realtime, and only it",
                ));
            }
            interval
        }
    };

    let mut metrics = Vec::new();
    for name in get("metrics").unwrap_or("visitors").split(',') {
        let name = name.trim();
        let metric = Metric::parse(name).ok_or_else(|| {
            ApiError::bad(
                "metrics",
                format!(
                    "unknown metric {:?}; use {}",
                    truncate(name),
                    Metric::ALL.map(Metric::name).join(", ")
                ),
            )
        })?;
        if !metrics.contains(&metric) {
            metrics.push(metric);
        }
    }

    let property = match (endpoint, get("property")) {
        (Endpoint::Breakdown, None) => {
            return Err(ApiError::bad("property", "a breakdown needs a property"))
        }
        (Endpoint::Breakdown, Some(text)) => Some(Property::parse(text, "property")?),
        (_, None) => None,
        (_, Some(_)) => return Err(ApiError::bad("property", "only breakdowns take a property")),
    };
    let per_event = [
        Property::Event(EventProperty::Name),
        Property::Event(EventProperty::Goal),
    ];
    if property.as_ref().is_some_and(|p| per_event.contains(p)) {
        if let Some(m) = metrics
            .iter()
            .find(|m| matches!(m, Metric::TimeOnPage | Metric::ScrollDepth))
        {
            return Err(ApiError::bad(
                "metrics",
                format!(
                    "{} is measured per page, not per event name or goal",
                    m.name()
                ),
            ));
        }
    }

    let filters = match get("filters") {
        None | Some("") => Vec::new(),
        Some(text) => parse_filters(text)?
            .into_iter()
            .map(Condition::Filter)
            .collect(),
    };
    let about_goals = property == Some(Property::Event(EventProperty::Goal))
        || filters.iter().any(Condition::is_goal_filter);
    if metrics.contains(&Metric::ConversionRate) && !about_goals {
        return Err(ApiError::bad(
            "metrics",
            "conversion_rate needs property=event:goal or an event:goal filter",
        ));
    }

    let exact = match get("sampling") {
        None | Some("auto") => false,
        Some("off") => true,
        Some(other) => {
            return Err(ApiError::bad(
                "sampling",
                format!("{:?} is not auto or off", truncate(other)),
            ))
        }
    };
    let with_imported = match get("with_imported") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad(
                "with_imported",
                format!("{:?} is not true or false", truncate(other)),
            ))
        }
    };
    let compare = parse_comparison(&get)?;
    if period == Period::Realtime && compare.is_some_and(|c| c != Comparison::PreviousPeriod) {
        return Err(ApiError::bad(
            "comparison",
            "period=realtime compares with the previous 30 minutes only",
        ));
    }

    let limit = parse_number(get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let page = parse_number(get("page"), "page", 1, 1, MAX_PAGE)?;

    let sort = match get("sort") {
        None | Some("") => Sort {
            key: SortKey::Metric(Metric::Visitors),
            descending: true,
        },
        Some(text) => {
            if endpoint != Endpoint::Breakdown {
                return Err(ApiError::bad("sort", "only breakdowns can be sorted"));
            }
            let (name, direction) = text.split_once(':').unwrap_or((text, "desc"));
            let descending = match direction {
                "desc" => true,
                "asc" => false,
                _ => return Err(ApiError::bad("sort", "the direction is asc or desc")),
            };
            let key = if property.as_ref().map(Property::result_key) == Some(name) {
                SortKey::Property
            } else {
                match Metric::parse(name) {
                    Some(m) if metrics.contains(&m) => SortKey::Metric(m),
                    _ => {
                        return Err(ApiError::bad(
                            "sort",
                            format!(
                                "{:?} is neither a requested metric nor the property",
                                truncate(name)
                            ),
                        ))
                    }
                }
            };
            Sort { key, descending }
        }
    };

    let format = match get("format") {
        None | Some("json") | Some("") => Format::Json,
        Some("csv") => Format::Csv,
        Some(other) => {
            return Err(ApiError::bad(
                "format",
                format!("{:?} is not json or csv", truncate(other)),
            ))
        }
    };

    Ok(StatsParams {
        site_id,
        period,
        date,
        interval,
        metrics,
        property,
        filters,
        compare,
        with_imported,
        exact,
        limit,
        offset: (page - 1) * limit,
        sort: vec![sort],
        format,
    })
}

/// `comparison=previous_period|year_over_year|custom` with `compare_from=` and `compare_to=`
/// (Plausible's dashboard), or `compare=` (Plausible's Stats API v1) with the same values;
/// `off` or nothing: no comparison.
fn parse_comparison<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Option<Comparison>, ApiError> {
    let (param, text) = match (get("comparison"), get("compare")) {
        (Some(a), Some(b)) if a != b && !a.is_empty() && !b.is_empty() => {
            return Err(ApiError::bad(
                "comparison",
                "comparison and compare disagree; send one of them",
            ))
        }
        (Some(a), _) if !a.is_empty() => ("comparison", a),
        (_, Some(b)) => ("compare", b),
        _ => return Ok(None),
    };
    let comparison = match text {
        "" | "off" => return Ok(None),
        "previous_period" => Comparison::PreviousPeriod,
        "year_over_year" => Comparison::YearOverYear,
        "custom" => {
            let date = |name: &'static str| {
                let text = get(name).ok_or_else(|| {
                    ApiError::bad(
                        name,
                        "a custom comparison needs compare_from and compare_to (YYYY-MM-DD)",
                    )
                })?;
                parse_date_as(text, name)
            };
            let (from, to) = (date("compare_from")?, date("compare_to")?);
            if from > to {
                return Err(ApiError::bad(
                    "compare_to",
                    "compare_from is after compare_to",
                ));
            }
            Comparison::Custom(from, to)
        }
        other => {
            return Err(ApiError::bad(
                param,
                format!(
                    "{:?} is not one of previous_period, year_over_year, custom, off",
                    truncate(other)
                ),
            ))
        }
    };
    Ok(Some(comparison))
}

/// A site domain as configured: lower-case letters, digits, dots and dashes.
pub fn parse_site_id(text: Option<&str>) -> Result<String, ApiError> {
    let text = text.ok_or_else(|| ApiError::bad("site_id", "missing"))?;
    let ok = !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    if ok {
        Ok(text.to_string())
    } else {
        Err(ApiError::bad(
            "site_id",
            "must be a site's domain, e.g. example.com",
        ))
    }
}

pub(crate) fn parse_date(text: &str) -> Result<Date, ApiError> {
    parse_date_as(text, "date")
}

/// A date `YYYY-MM-DD` of parameter `param`, in the years ClickHouse's `DateTime` holds.
fn parse_date_as(text: &str, param: &'static str) -> Result<Date, ApiError> {
    let bad = || {
        ApiError::bad(
            param,
            format!("{:?} is not a date YYYY-MM-DD", truncate(text)),
        )
    };
    let text = text.trim();
    if text.len() != 10 {
        return Err(bad());
    }
    let date: Date = text.parse().map_err(|_| bad())?;
    // ClickHouse's DateTime holds 1970 to 2105.
    if !(1970..=2100).contains(&date.year()) {
        return Err(ApiError::bad(param, "dates are between 1970 and 2100"));
    }
    Ok(date)
}

fn parse_number(
    text: Option<&str>,
    param: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad(
            param,
            format!("must be a whole number from {min} to {max}"),
        )),
    }
}

/// `event:page==/a|/b;visit:country!=DE`: filters joined by `;`, each property, operator
/// (`==`, `!=`, `~`) and alternatives joined by `|` (`\|` is a literal bar, `\\` a backslash).
pub fn parse_filters(text: &str) -> Result<Vec<Filter>, ApiError> {
    let mut filters = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let at = part.find(['=', '!', '~']).ok_or_else(|| {
            ApiError::bad(
                "filters",
                format!("{:?} has no operator (==, != or ~)", truncate(part)),
            )
        })?;
        let (name, rest) = part.split_at(at);
        let (op, value) = if let Some(v) = rest.strip_prefix("==") {
            (FilterOp::Is, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (FilterOp::IsNot, v)
        } else if let Some(v) = rest.strip_prefix('~') {
            (FilterOp::Contains, v)
        } else {
            return Err(ApiError::bad(
                "filters",
                format!("{:?}: the operator is ==, != or ~", truncate(part)),
            ));
        };
        let property = Property::parse(name.trim(), "filters")?;
        let values = split_alternatives(value);
        if values.len() > MAX_ALTERNATIVES
            || values.iter().any(|v| v.chars().count() > MAX_FILTER_VALUE)
        {
            return Err(ApiError::bad(
                "filters",
                format!(
                    "at most {MAX_ALTERNATIVES} alternatives of at most {MAX_FILTER_VALUE} characters"
                ),
            ));
        }
        if op == FilterOp::Contains && values.iter().any(String::is_empty) {
            return Err(ApiError::bad("filters", "~ needs a non-empty value"));
        }
        filters.push(Filter {
            property,
            op,
            values,
            ignore_case: false,
        });
    }
    if filters.len() > MAX_FILTERS {
        return Err(ApiError::bad(
            "filters",
            format!("at most {MAX_FILTERS} filters"),
        ));
    }
    Ok(filters)
}

fn split_alternatives(text: &str) -> Vec<String> {
    let mut values = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next @ ('|' | '\\')) => values.last_mut().unwrap().push(next),
                Some(next) => {
                    let last = values.last_mut().unwrap();
                    last.push('\\');
                    last.push(next);
                }
                None => values.last_mut().unwrap().push('\\'),
            },
            '|' => values.push(String::new()),
            c => values.last_mut().unwrap().push(c),
        }
    }
    values
}

/// At most 60 characters of client text in an error message.
pub(crate) fn truncate(text: &str) -> String {
    text.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err(endpoint: Endpoint, pairs: &[(&str, &str)]) -> &'static str {
        match parse(endpoint, &q(pairs)) {
            Err(ApiError::BadParam { param, .. }) => param,
            other => panic!("{pairs:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let p = parse(Endpoint::Aggregate, &q(&[("site_id", "example.com")])).unwrap();
        assert_eq!(p.period, Period::ThirtyDays);
        assert_eq!(p.metrics, [Metric::Visitors]);
        assert_eq!(p.interval, Interval::Date);
        assert_eq!(p.limit, 100);
    }

    #[test]
    fn filters_with_alternatives_and_escapes() {
        let f =
            parse_filters(r"event:page==/a|/b\|c;visit:country!=DE;event:props:plan~pro").unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].values, ["/a", "/b|c"]);
        assert_eq!(f[1].op, FilterOp::IsNot);
        assert_eq!(
            f[2].property,
            Property::Event(EventProperty::Prop("plan".into()))
        );
        assert_eq!(f[2].op, FilterOp::Contains);
    }

    #[test]
    fn comparisons() {
        let t = Endpoint::Timeseries;
        let compare = |pairs: &[(&str, &str)]| {
            let mut q = q(pairs);
            q.insert("site_id".into(), "a.com".into());
            parse(t, &q).map(|p| p.compare)
        };
        assert_eq!(compare(&[]).unwrap(), None);
        assert_eq!(compare(&[("comparison", "off")]).unwrap(), None);
        assert_eq!(
            compare(&[("compare", "previous_period")]).unwrap(),
            Some(Comparison::PreviousPeriod)
        );
        assert_eq!(
            compare(&[("comparison", "year_over_year")]).unwrap(),
            Some(Comparison::YearOverYear)
        );
        assert_eq!(
            compare(&[
                ("comparison", "custom"),
                ("compare_from", "2025-02-01"),
                ("compare_to", "2025-02-28")
            ])
            .unwrap(),
            Some(Comparison::Custom(
                "2025-02-01".parse().unwrap(),
                "2025-02-28".parse().unwrap()
            ))
        );
        let bad = |pairs: &[(&str, &str)]| match compare(pairs) {
            Err(ApiError::BadParam { param, .. }) => param,
            other => panic!("{pairs:?}: {other:?}"),
        };
        assert_eq!(bad(&[("comparison", "last_year")]), "comparison");
        assert_eq!(bad(&[("compare", "yoy")]), "compare");
        assert_eq!(
            bad(&[
                ("comparison", "previous_period"),
                ("compare", "year_over_year")
            ]),
            "comparison"
        );
        assert_eq!(bad(&[("comparison", "custom")]), "compare_from");
        assert_eq!(
            bad(&[("comparison", "custom"), ("compare_from", "2025-01-01")]),
            "compare_to"
        );
        assert_eq!(
            bad(&[
                ("comparison", "custom"),
                ("compare_from", "2025-01-02"),
                ("compare_to", "2025-01-01")
            ]),
            "compare_to"
        );
        assert_eq!(
            bad(&[
                ("comparison", "custom"),
                ("compare_from", "1969-12-31"),
                ("compare_to", "2025-01-01")
            ]),
            "compare_from"
        );
        assert_eq!(
            bad(&[("period", "realtime"), ("comparison", "year_over_year")]),
            "comparison"
        );
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let b = Endpoint::Breakdown;
        let a = Endpoint::Aggregate;
        assert_eq!(err(a, &[]), "site_id");
        assert_eq!(err(a, &[("site_id", "x' OR 1=1")]), "site_id");
        assert_eq!(err(a, &[("site_id", "a.com"), ("period", "1y")]), "period");
        assert_eq!(
            err(a, &[("site_id", "a.com"), ("period", "custom")]),
            "date"
        );
        assert_eq!(
            err(
                a,
                &[
                    ("site_id", "a.com"),
                    ("period", "custom"),
                    ("date", "2026-01-02,2026-01-01")
                ]
            ),
            "date"
        );
        assert_eq!(
            err(a, &[("site_id", "a.com"), ("metrics", "visitors,x")]),
            "metrics"
        );
        assert_eq!(err(b, &[("site_id", "a.com")]), "property");
        assert_eq!(
            err(b, &[("site_id", "a.com"), ("property", "visit:nope")]),
            "property"
        );
        assert_eq!(
            err(a, &[("site_id", "a.com"), ("filters", "event:page")]),
            "filters"
        );
        assert_eq!(
            err(
                b,
                &[
                    ("site_id", "a.com"),
                    ("property", "event:page"),
                    ("limit", "0")
                ]
            ),
            "limit"
        );
        assert_eq!(
            err(
                b,
                &[
                    ("site_id", "a.com"),
                    ("property", "event:page"),
                    ("sort", "bounce_rate")
                ]
            ),
            "sort"
        );
        assert_eq!(err(a, &[("site_id", "a.com"), ("format", "xml")]), "format");
        assert_eq!(
            err(
                Endpoint::Timeseries,
                &[("site_id", "a.com"), ("interval", "minute")]
            ),
            "interval"
        );
    }

    #[test]
    fn the_condition_tree_lists_its_filters_and_goals() {
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
            assert!(!op.is_negative() && op.negated().is_negative());
            assert_eq!(op.negated().negated(), op);
        }
    }
}
