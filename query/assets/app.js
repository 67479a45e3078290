// Glimpse dashboard: plain JavaScript over the stats API (/api/v1/…). Site, period, date,
// filters, comparison and the chart's metric live in the URL (?site=&period=&date=&filters=
// &comparison=&compare_from=&compare_to=&metric=&funnel=), so a view can be bookmarked and shared; a share link adds &auth=TOKEN. People sign in with e-mail and password: the service
// sets an HttpOnly session cookie this script never sees. An API key entered in the other form
// is kept in sessionStorage only (never a cookie, never localStorage). Data from the API
// reaches the DOM only through textContent and attributes, never as HTML.
'use strict'

const KEY_STORAGE = 'glimpse.key'
/** Every metric the stats API offers, with its label: the chart can show any of them. */
const METRICS = [
  ['visitors', 'Unique visitors'],
  ['visits', 'Visits'],
  ['pageviews', 'Page views'],
  ['views_per_visit', 'Views per visit'],
  ['bounce_rate', 'Bounce rate'],
  ['visit_duration', 'Visit duration'],
  ['events', 'Total events'],
  ['time_on_page', 'Time on page'],
  ['scroll_depth', 'Scroll depth'],
  ['conversion_rate', 'Conversion rate'], // with a goal filter only
]
/** Rates: their change is in points, not percent. */
const RATES = new Set(['bounce_rate', 'conversion_rate'])
const HEADLINE = [
  ['visitors', 'Unique visitors'],
  ['visits', 'Visits'],
  ['pageviews', 'Page views'],
  ['views_per_visit', 'Views per visit'],
  ['bounce_rate', 'Bounce rate'],
  ['visit_duration', 'Visit duration'],
]
const CARDS = [
  { title: 'Pages', tabs: [['event:page', 'Top pages'], ['visit:entry_page', 'Entry pages'], ['visit:exit_page', 'Exit pages']] },
  { title: 'Sources', tabs: [['visit:source', 'Sources'], ['visit:referrer', 'Referrers']] },
  {
    title: 'Campaigns',
    tabs: [['visit:utm_campaign', 'Campaign'], ['visit:utm_source', 'UTM source'], ['visit:utm_medium', 'UTM medium'], ['visit:utm_term', 'Term'], ['visit:utm_content', 'Content']],
  },
  { title: 'Locations', tabs: [['visit:country', 'Countries'], ['visit:region', 'Regions'], ['visit:city', 'Cities']] },
  { title: 'Devices', tabs: [['visit:device', 'Devices'], ['visit:browser', 'Browsers'], ['visit:os', 'Operating systems']] },
  { title: 'Custom events', tabs: [['event:name', 'Events']], events: true },
  { title: 'Goals', tabs: [['event:goal', 'Goals']], goals: true },
  { title: 'Event properties', props: true, tabs: [] },
]
const PROPERTY_LABELS = {
  page: 'Page', entry_page: 'Entry page', exit_page: 'Exit page', source: 'Source', referrer: 'Referrer',
  utm_campaign: 'Campaign', utm_source: 'UTM source', utm_medium: 'UTM medium', utm_term: 'UTM term',
  utm_content: 'UTM content', country: 'Country', region: 'Region', city: 'City', device: 'Device',
  browser: 'Browser', browser_version: 'Browser version', os: 'OS', os_version: 'OS version', name: 'Event',
  hostname: 'Hostname', goal: 'Goal',
}
const REASONS = { bot: 'bots', opt_out: 'opt-outs', dnt: 'Do Not Track', gpc: 'Global Privacy Control', spam: 'referrer spam' }
const NOT_EVENTS = new Set(['pageview', 'engagement'])
const countryNames = new Intl.DisplayNames(['en'], { type: 'region', fallback: 'code' })
/** How a breakdown value is shown: a country's name for its ISO code, else the value itself. */
function displayValue(property, value) {
  if (property !== 'visit:country' || !/^[A-Z]{2}$/.test(value)) return value
  try {
    return countryNames.of(value)
  } catch {
    return value
  }
}

const $ = (id) => document.getElementById(id)
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v
    else if (k === 'text') e.textContent = v
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v)
    else e.setAttribute(k, v)
  }
  for (const c of children) if (c != null) e.append(c) // strings become text nodes
  return e
}
const SVG = 'http://www.w3.org/2000/svg'
function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v))
  return e
}

// --- State in the URL -----------------------------------------------------------------------
function readUrl() {
  const q = new URLSearchParams(location.search)
  return {
    site: q.get('site') || '',
    period: q.get('period') || '30d',
    date: q.get('date') || '',
    filters: (q.get('filters') || '').split(';').filter(Boolean),
    auth: q.get('auth') || '',
    // What the period is compared with: previous_period (the default), year_over_year, custom
    // (compare_from..compare_to) or off.
    comparison: q.get('comparison') || 'previous_period',
    compareFrom: q.get('compare_from') || '',
    compareTo: q.get('compare_to') || '',
    metric: q.get('metric') || 'visitors', // the chart's
    funnel: q.get('funnel') || '', // the Funnels card's saved funnel
    tabs: {}, // the tab shown per card: not in the URL
  }
}
let state = readUrl()

function writeUrl(push) {
  const q = []
  const set = (name, value) =>
    // Readable URLs: `:`, `/`, `=`, `,` and `;` are safe in a query value.
    q.push(`${name}=${encodeURIComponent(value).replace(/%(3A|2F|3D|2C|3B)/g, (c) => decodeURIComponent(c))}`)
  if (state.site) set('site', state.site)
  if (state.period !== '30d') set('period', state.period)
  if (state.date) set('date', state.date)
  if (state.filters.length) set('filters', state.filters.join(';'))
  if (state.comparison !== 'previous_period') set('comparison', state.comparison)
  if (state.comparison === 'custom') {
    if (state.compareFrom) set('compare_from', state.compareFrom)
    if (state.compareTo) set('compare_to', state.compareTo)
  }
  if (state.metric !== 'visitors') set('metric', state.metric)
  if (state.funnel) set('funnel', state.funnel)
  if (state.auth) set('auth', state.auth)
  // The hash is the admin view (#settings, #account): kept as it is.
  const url = `${location.pathname}?${q.join('&')}${location.hash}`
  if (url !== location.pathname + location.search + location.hash) history[push ? 'pushState' : 'replaceState'](null, '', url)
}

/** A filter part of the API's syntax: `event:page==/a` → {property, op, values}. */
function parseFilter(part) {
  const m = /^([^=!~]+)(==|!=|~)(.*)$/.exec(part)
  if (!m) return { property: part, op: '', values: [] }
  const values = ['']
  for (let i = 0; i < m[3].length; i++) {
    const c = m[3][i]
    if (c === '\\' && (m[3][i + 1] === '|' || m[3][i + 1] === '\\')) values[values.length - 1] += m[3][++i]
    else if (c === '|') values.push('')
    else values[values.length - 1] += c
  }
  return { property: m[1], op: m[2], values }
}
const escapeValue = (v) => v.replace(/\\/g, '\\\\').replace(/\|/g, '\\|')

function addFilter(property, value) {
  state.filters = state.filters.filter((f) => parseFilter(f).property !== property)
  state.filters.push(`${property}==${escapeValue(value)}`)
  writeUrl(true)
  load()
}
function removeFilter(part) {
  state.filters = state.filters.filter((f) => f !== part)
  writeUrl(true)
  load()
}

// --- API --------------------------------------------------------------------------------------
class HttpError extends Error {
  constructor(status, message) {
    super(message)
    this.status = status
  }
}
/** The JSON body of an answer (null when it is not JSON); an HttpError with the service's short
 * reason (its `error` field) when the status is not a success. */
async function jsonAnswer(response) {
  let answer = null
  try {
    answer = await response.json()
  } catch {
    // not JSON: the status says enough
  }
  if (!response.ok) throw new HttpError(response.status, (answer && answer.error) || `HTTP ${response.status}`)
  return answer
}
const key = () => sessionStorage.getItem(KEY_STORAGE)
/** The signed-in person ({email, owner, sites}) or null. */
let me = null

/** A POST to the sign-in endpoints. The page's no-referrer policy would make the browser send
 * `Origin: null`, which the service refuses for signed-in state changes: this request names its
 * origin (and no path) instead. */
async function authPost(path, body = {}) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(body),
    credentials: 'same-origin',
    referrerPolicy: 'strict-origin',
    cache: 'no-store',
  })
  return jsonAnswer(response)
}

/** Who is signed in (null when nobody); says whether any user exists at all. */
async function whoAmI() {
  const response = await fetch('/api/auth/me', { headers: { Accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store' })
  if (response.status === 401) {
    const body = await response.json().catch(() => null)
    return { me: null, usersExist: !body || body.users_exist !== false }
  }
  return { me: await jsonAnswer(response), usersExist: true }
}

/** A stats API request: its URL (with the view's site, period and filters where `scoped`) and
 * fetch options (the key, the share token or the session cookie). */
function apiRequest(path, params, scoped) {
  const q = new URLSearchParams()
  if (scoped) {
    q.set('site_id', state.site)
    q.set('period', state.period)
    if (state.date && state.period !== 'realtime') q.set('date', state.date) // realtime is now
    if (state.filters.length) q.set('filters', state.filters.join(';'))
    if (siteImports[state.site]) q.set('with_imported', 'true')
  }
  for (const [k, v] of Object.entries(params)) q.set(k, v)
  if (state.auth) q.set('auth', state.auth)
  const headers = { Accept: 'application/json' }
  if (!state.auth && key()) headers.Authorization = `Bearer ${key()}`
  // The session cookie goes only with requests that have neither a share token nor a key.
  const credentials = state.auth || key() ? 'omit' : 'same-origin'
  return [`${path}?${q}`, { headers, credentials, cache: 'no-store' }]
}

async function api(path, params = {}, { scoped = true } = {}) {
  const response = await fetch(...apiRequest(path, params, scoped))
  return jsonAnswer(response)
}

/** Downloads a report as the API's CSV (formula-safe cells, written by the server) with the
 * view's filters: fetched with the same credentials as the page, saved through a blob link. */
async function downloadCsv(path, params, name) {
  const [url, init] = apiRequest(path, { ...params, format: 'csv' }, true)
  const response = await fetch(url, { ...init, headers: { ...init.headers, Accept: 'text/csv' } })
  if (!response.ok) await jsonAnswer(response) // throws the service's reason
  const link = el('a', { href: URL.createObjectURL(await response.blob()), download: `${state.site}-${name}-${state.period}.csv` })
  document.body.append(link)
  link.click()
  link.remove()
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000)
}
/** A "CSV" button for one report: `what()` gives its API path, parameters and file name. */
function csvButton(label, what) {
  return el('button', {
    type: 'button',
    class: 'link csv',
    title: `Download ${label} as CSV (with the current filters)`,
    'aria-label': `Download ${label} as CSV`,
    text: 'CSV',
    onclick: () => downloadCsv(...what()).catch(fail),
  })
}

/** The comparison parameters of the view: none in realtime, when off, or while a custom
 * comparison range is incomplete. */
function compareParams() {
  if (state.period === 'realtime' || state.comparison === 'off') return {}
  if (state.comparison !== 'custom') return { comparison: state.comparison }
  if (!validRange(state.compareFrom, state.compareTo)) return {}
  return { comparison: 'custom', compare_from: state.compareFrom, compare_to: state.compareTo }
}
const isDate = (d) => /^\d{4}-\d{2}-\d{2}$/.test(d)
const validRange = (from, to) => isDate(from) && isDate(to) && from <= to
/** The metrics the view can ask for: conversion rates need a goal filter. */
function availableMetrics() {
  const goals = state.filters.some((f) => f.startsWith('event:goal'))
  return METRICS.filter(([m]) => m !== 'conversion_rate' || goals)
}
function chartMetric() {
  return availableMetrics().some(([m]) => m === state.metric) ? state.metric : 'visitors'
}
const metricLabel = (metric) => (METRICS.find(([m]) => m === metric) || [metric, metric])[1]

// --- Formatting -----------------------------------------------------------------------------
const integer = new Intl.NumberFormat('en')
const compact = new Intl.NumberFormat('en', { notation: 'compact', maximumFractionDigits: 1 })
function formatNumber(n) {
  return Math.abs(n) >= 100000 ? compact.format(n) : integer.format(n)
}
function formatMetric(metric, v) {
  if (v == null) return '—'
  switch (metric) {
    case 'bounce_rate':
    case 'scroll_depth':
    case 'conversion_rate':
      return `${v}%`
    case 'views_per_visit':
      return v.toFixed(2)
    case 'time_on_page':
    case 'visit_duration': {
      const m = Math.floor(v / 60)
      const s = v % 60
      return m >= 60 ? `${Math.floor(m / 60)}h ${m % 60}m` : m ? `${m}m ${String(s).padStart(2, '0')}s` : `${s}s`
    }
    default:
      return formatNumber(v)
  }
}
function propertyLabel(property) {
  const name = property.split(':').slice(1).join(':')
  if (name.startsWith('props:')) return `Property ${name.slice(6)}`
  return PROPERTY_LABELS[name] || name
}
function shortDate(label, interval) {
  // Labels are YYYY-MM-DD, YYYY-MM-DD HH:00:00 or YYYY-MM-DD HH:MM:00 (the site's local time).
  if (interval === 'hour' || interval === 'minute') return label.slice(11, 16)
  const [y, m, d] = label.slice(0, 10).split('-').map(Number)
  const month = new Date(Date.UTC(y, m - 1, d)).toLocaleString('en', { month: 'short', timeZone: 'UTC' })
  return interval === 'month' ? `${month} ${y}` : `${d} ${month}`
}
function interval() {
  return { realtime: 'minute', day: 'hour', '6mo': 'month', '12mo': 'month' }[state.period] || 'date'
}

// --- Rendering ------------------------------------------------------------------------------
function renderFilters() {
  const box = $('filters')
  box.replaceChildren()
  for (const part of state.filters) {
    const f = parseFilter(part)
    const op = { '==': 'is', '!=': 'is not', '~': 'contains' }[f.op] || ''
    box.append(
      el(
        'span',
        { class: 'chip', 'data-filter': part },
        el('span', { class: 'chip-property', text: propertyLabel(f.property) }),
        ` ${op} `,
        el('strong', { text: f.values.map((v) => displayValue(f.property, v)).join(' or ') }),
        el('button', { type: 'button', class: 'chip-remove', 'aria-label': 'Remove filter', title: 'Remove filter', text: '×', onclick: () => removeFilter(part) }),
      ),
    )
  }
  if (state.filters.length > 1) {
    box.append(el('button', { type: 'button', class: 'link', text: 'Clear all', onclick: () => { state.filters = []; writeUrl(true); load() } }))
  }
}

/** A change as shown: an arrow, the amount, `%` (points for rates), and whether it is good. */
function changeBadge(metric, change, title) {
  // A lower bounce rate is better; for the rest, up is good.
  const good = metric === 'bounce_rate' ? change < 0 : change > 0
  const cls = change === 0 ? 'flat' : good ? 'up' : 'down'
  const arrow = change > 0 ? '↑' : change < 0 ? '↓' : '→'
  const unit = RATES.has(metric) ? ' pts' : '%'
  return el('span', { class: `change ${cls}`, 'data-change': String(change), title, text: `${arrow} ${Math.abs(change)}${unit}` })
}

/** "2026-03-01 – 2026-03-31", the compared dates the API names. */
const comparedDates = (c) => (c ? (c.from === c.to ? c.from : `${c.from} – ${c.to}`) : '')

function renderMetrics(results, comparison) {
  const box = $('metrics')
  box.replaceChildren()
  for (const [metric, label] of HEADLINE) {
    const r = results[metric] || {}
    const tile = el('div', { class: 'metric', 'data-metric': metric, 'data-value': String(r.value ?? '') })
    tile.append(el('div', { class: 'metric-label', text: label }), el('div', { class: 'metric-value', text: formatMetric(metric, r.value) }))
    if (r.change != null) {
      tile.dataset.comparison = String(r.comparison_value ?? '')
      const badge = changeBadge(metric, r.change, `${comparedDates(comparison)}: ${formatMetric(metric, r.comparison_value)}`)
      badge.classList.add('metric-change')
      tile.append(badge, el('div', { class: 'metric-compared', text: `vs ${formatMetric(metric, r.comparison_value)}` }))
    }
    box.append(tile)
  }
}

function renderRows(list, property, rows, metric, compared) {
  list.replaceChildren()
  if (!rows.length) {
    list.append(el('li', { class: 'empty', text: 'No data for this period' }))
    return
  }
  const max = Math.max(1, ...rows.map((r) => r.visitors))
  const key = resultKey(property)
  const columns = 1 + (metric ? 1 : 0) + (compared ? 1 : 0)
  for (const r of rows) {
    const value = String(r[key] ?? '')
    const bar = el('span', { class: 'bar' })
    bar.style.width = `${(r.visitors / max) * 100}%` // CSSOM, allowed by the CSP
    // `;` separates filters in the API's syntax, and (other) is a merge of small groups.
    const clickable = value !== '(other)' && !value.includes(';')
    const name = clickable
      ? el('button', { type: 'button', class: 'row-name', title: `Filter by ${propertyLabel(property)}: ${value}`, text: displayValue(property, value), onclick: () => addFilter(property, value) })
      : el('span', { class: 'row-name', text: displayValue(property, value) })
    const cells = [el('span', { class: 'row-value', text: formatNumber(r.visitors) })]
    if (metric) cells.push(el('span', { class: 'row-value', text: metric === 'conversion_rate' ? `${r[metric]}%` : formatNumber(r[metric]) }))
    const item = el('li', { class: `row cols-${columns}`, 'data-property': property, 'data-value': value }, bar, name, ...cells)
    if (compared) {
      // The change of visitors; none where the comparison is withheld (under the (other)
      // threshold then) or for (other) itself.
      const change = r.change ? r.change.visitors : null
      item.dataset.change = change == null ? '' : String(change)
      const before = r.comparison ? `${integer.format(r.comparison.visitors)} visitors then` : 'not comparable'
      item.append(el('span', { class: 'row-value' }, change == null ? el('span', { class: 'change flat', title: before, text: '—' }) : changeBadge('visitors', change, before)))
    }
    list.append(item)
  }
}

/** The field a breakdown row's value is in: `page` for event:page, `plan` for event:props:plan. */
function resultKey(property) {
  return property.startsWith('event:props:') ? property.slice(12) : property.split(':').pop()
}

/** The breakdown request of a card's active tab. */
function cardQuery(card, property) {
  const metric = card.goals ? 'conversion_rate' : card.events || card.props ? 'events' : null
  const limit = card.events || card.props ? 20 : 10
  return { metric, params: { property, metrics: metric ? `visitors,${metric}` : 'visitors', limit, ...compareParams() } }
}

async function loadCard(card, index, seq) {
  const tabs = card.tabs
  const active = Math.min(state.tabs[index] || 0, Math.max(0, tabs.length - 1))
  card.tabList.replaceChildren()
  tabs.forEach(([property, label], i) => {
    card.tabList.append(
      el('button', {
        type: 'button',
        role: 'tab',
        class: i === active ? 'tab active' : 'tab',
        'aria-selected': String(i === active),
        'data-property': property,
        text: label,
        onclick: () => {
          state.tabs[index] = i
          loadCard(card, index, loadSeq).catch(fail)
        },
      }),
    )
  })
  card.csv.hidden = !tabs.length
  if (!tabs.length) {
    renderRows(card.list, '', [], null)
    card.list.firstChild.textContent = 'No custom properties in this period'
    return
  }
  const property = tabs[active][0]
  if (card.goals && !(siteGoals[state.site] || []).length) {
    card.csv.hidden = true
    renderRows(card.list, property, [], null)
    card.list.firstChild.textContent = 'No goals set for this site (add them in its settings)'
    return
  }
  const { metric, params } = cardQuery(card, property)
  const compared = 'comparison' in params
  const columns = 1 + (metric ? 1 : 0) + (compared ? 1 : 0)
  card.head.className = `list-head cols-${columns}`
  // The CSV button sits in the head's first column, above the names.
  const head = [el('span', {}, card.csv), el('span', { text: 'Visitors' })]
  if (metric) head.push(el('span', { text: card.goals ? 'CR' : 'Events' }))
  if (compared) head.push(el('span', { text: 'Change' }))
  card.head.replaceChildren(...head)
  // The CSV of the report shown: this tab's breakdown, up to the API's largest page.
  card.download = () => ['/api/v1/stats/breakdown', { ...params, limit: 1000 }, `${card.title}-${tabs[active][1]}`.toLowerCase().replace(/[^a-z0-9]+/g, '-')]
  const body = await api('/api/v1/stats/breakdown', params)
  if (seq !== loadSeq) return
  noteSampling(body)
  let rows = body.results
  if (card.events) rows = rows.filter((r) => !NOT_EVENTS.has(r.name))
  // Visits without a campaign or events without the property are not worth a row.
  if (card.props || property.startsWith('visit:utm_')) rows = rows.filter((r) => r[resultKey(property)] !== '(none)')
  renderRows(card.list, property, rows.slice(0, 10), metric, compared)
}

function buildCards() {
  const grid = $('cards')
  grid.replaceChildren()
  CARDS.forEach((card) => {
    card.tabList = el('div', { class: 'tabs', role: 'tablist' })
    card.head = el('div', { class: 'list-head' })
    card.list = el('ol', { class: 'rows' })
    card.csv = csvButton(card.title, () => card.download())
    grid.append(el('section', { class: 'card', 'data-card': card.title }, el('div', { class: 'card-head' }, el('h2', { text: card.title }), card.tabList), card.head, card.list))
  })
}

function renderFiltered(body) {
  const box = $('filtered')
  if (!body.total) {
    box.textContent = 'No traffic was filtered out in this period.'
    return
  }
  const parts = body.results.map((r) => `${integer.format(r.count)} ${REASONS[r.reason] || r.reason}`)
  box.textContent = `Not counted: ${integer.format(body.total)} requests filtered out (${parts.join(', ')}).`
}

/** The smallest sample among the answers shown (`sampling` in an answer: its figures are
 * estimated from a sample of the visitors), said once under the cards. */
let sampled = null
function noteSampling(body) {
  if (!body || !body.sampling) return
  if (!sampled || body.sampling.rate < sampled.rate) sampled = body.sampling
  const box = $('sampled')
  box.hidden = false
  box.textContent = `Some figures are estimated from a ${sampled.sample_percent}% sample of visitors (${integer.format(sampled.rows)} events in this period): counts are scaled up, rates and averages are not.`
}

function renderImported(aggregate) {
  const range = siteImports[state.site]
  const box = $('imported')
  box.hidden = !range
  if (!range) return
  box.textContent = aggregate.warning
    ? `Imported data (${range.from} to ${range.to}) is not included in this view: it holds daily totals per single property, so filters and hours cannot apply to it.`
    : `Includes data imported from Plausible for ${range.from} to ${range.to}.`
}

// --- Loading --------------------------------------------------------------------------------
let loadSeq = 0
let sites = []
/** Each site's goal names, from /api/v1/sites: the Goals card asks only where there are some. */
let siteGoals = {}
/** Each site's imported days ({from, to}) or null: where there are some, every figure includes them. */
let siteImports = {}

/** Shows one view: `login`, `dash` (the stats), `admin` (settings, account) or `invitation`. */
function show(view) {
  $('login').hidden = view !== 'login'
  $('signin').hidden = view !== 'login'
  $('dash').hidden = view !== 'dash'
  $('admin').hidden = view !== 'admin' && view !== 'invitation'
  if (view !== 'admin' && view !== 'invitation') {
    stopAdminPolling()
    $('admin').replaceChildren()
  }
  $('forget').hidden = !key() || !!state.auth
  const signedIn = !!me && !key() && !state.auth
  $('signout').hidden = !signedIn
  $('who').hidden = !signedIn
  $('who').textContent = signedIn ? me.email : ''
  // The period applies to the stats only; the site picker to the stats and the settings.
  const route = view === 'admin' ? adminRoute() : ''
  $('period-pickers').hidden = view !== 'dash'
  $('site').hidden = view === 'invitation' || route === 'account' || route === 'add-site'
  const nav = (view === 'dash' || view === 'admin') && !state.auth
  $('nav').hidden = !nav
  // Without a site (a new Glimpse) there are neither stats nor settings to go to.
  $('nav-stats').hidden = !nav || !route || !state.site
  $('nav-settings').hidden = !nav || route === 'settings' || !state.site || !mayAdmin(state.site)
  $('nav-add-site').hidden = !nav || route === 'add-site' || !(signedIn && me.owner)
  $('nav-account').hidden = !nav || route === 'account' || !signedIn
  document.body.dataset.state = view === 'dash' || view === 'admin' ? 'loading' : view
}

function fail(e) {
  if (e instanceof HttpError && e.status === 401 && !state.auth) {
    if (key()) {
      sessionStorage.removeItem(KEY_STORAGE)
      $('login-error').textContent = `The key was not accepted: ${e.message}`
    } else {
      me = null
      $('signin-error').textContent = e.message
    }
    sites = []
    show('login')
    return
  }
  $('error').hidden = false
  $('error').textContent = e instanceof HttpError ? `The stats API answered ${e.status}: ${e.message}` : `Could not load the stats: ${e.message}`
  document.body.dataset.state = 'error'
}

async function loadSites() {
  const body = await api('/api/v1/sites', state.auth ? { site_id: state.site } : {}, { scoped: false })
  sites = body.results.map((s) => s.domain)
  siteGoals = Object.fromEntries(body.results.map((s) => [s.domain, s.goals || []]))
  siteImports = Object.fromEntries(body.results.map((s) => [s.domain, s.imported || null]))
  const picker = $('site')
  picker.replaceChildren(...sites.map((d) => el('option', { value: d, text: d })))
  if (!sites.includes(state.site)) {
    state.site = sites[0] || ''
    writeUrl(false)
  }
  picker.value = state.site
  picker.disabled = sites.length < 2
}

/** The requests behind the headline and the chart, for their CSV buttons. */
const reports = {}

/** The pickers as the view is: period, its end date or custom range, comparison, metric. */
function showPickers() {
  $('period').value = state.period
  $('date').value = isDate(state.date) ? state.date : ''
  $('date').hidden = state.period === 'custom'
  $('date').disabled = state.period === 'realtime'
  const [from, to] = state.period === 'custom' ? state.date.split(',') : ['', '']
  $('range').hidden = state.period !== 'custom'
  $('from').value = from || ''
  $('to').value = to || ''
  const comparison = $('comparison')
  comparison.value = state.comparison
  comparison.disabled = state.period === 'realtime'
  comparison.title = comparison.disabled ? 'The last 30 minutes are not compared' : 'Compare with'
  $('compare-range').hidden = state.comparison !== 'custom' || state.period === 'realtime'
  $('compare-from').value = state.compareFrom
  $('compare-to').value = state.compareTo
  const metric = $('chart-metric')
  metric.replaceChildren(...availableMetrics().map(([m, label]) => el('option', { value: m, text: label })))
  metric.value = chartMetric()
  $('chart-title').textContent = metricLabel(chartMetric())
}

/** A local date `days` before today, YYYY-MM-DD. */
function daysAgo(days) {
  const d = new Date()
  d.setDate(d.getDate() - days)
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`
}

/** Reads a pair of date inputs: both set and in order, or marked invalid (and `null`). */
function readRange(fromId, toId) {
  const [from, to] = [$(fromId).value, $(toId).value]
  const ok = validRange(from, to)
  $(toId).setCustomValidity(ok || !from || !to ? '' : 'The end is before the start')
  $(toId).reportValidity()
  return ok ? [from, to] : null
}

async function load() {
  const seq = ++loadSeq
  $('error').hidden = true
  const invitation = new URLSearchParams(location.search).get('invitation')
  if (invitation) {
    show('invitation')
    const view = await invitationView(invitation)
    if (seq !== loadSeq) return
    $('admin').replaceChildren(view)
    document.title = 'Invitation · Glimpse'
    view.querySelector('h1').focus()
    return
  }
  if (!state.auth && !key() && !me) {
    try {
      const who = await whoAmI()
      if (seq !== loadSeq) return
      me = who.me
      $('first-user').hidden = who.usersExist
    } catch (e) {
      fail(e)
      return
    }
    if (!me) {
      show('login')
      return
    }
  }
  const route = adminRoute()
  show(route ? 'admin' : 'dash')
  try {
    if (!sites.length) await loadSites()
    await learnKeyScope(state.site)
    if (seq !== loadSeq) return
    // The owner of a new Glimpse starts by adding a site.
    if (!state.site && me && me.owner && !key() && route !== 'account') {
      if (route !== 'add-site') history.replaceState(null, '', `${location.pathname}${location.search}#add-site`)
      show('admin')
    }
    if (adminRoute()) {
      show('admin') // again: the site is known now, and with it whether it may be changed
      await renderAdmin(adminRoute(), seq)
      return
    }
    show('dash') // again: whether Settings is offered depends on the site
    if (!state.site) throw new Error(me && !key() ? 'your account has no site yet: ask the owner for a role on one' : 'this key reads no site yet: add one with `glimpse site add`')
    showPickers()
    renderFilters()
    sampled = null
    $('sampled').hidden = true
    const iv = interval()
    const props = await api('/api/v1/stats/props')
    CARDS[CARDS.length - 1].tabs = props.results.slice(0, 6).map((p) => [`event:props:${p}`, p])
    const compare = compareParams()
    const headline = { metrics: HEADLINE.map((m) => m[0]).join(','), ...compare }
    const metric = chartMetric()
    const series = { metrics: metric, interval: iv, ...compare }
    reports.headline = () => ['/api/v1/stats/aggregate', headline, 'headline']
    reports.chart = () => ['/api/v1/stats/timeseries', series, `${metric}-by-${iv}`]
    const [aggregate, timeseries, filtered, live] = await Promise.all([
      api('/api/v1/stats/aggregate', headline),
      api('/api/v1/stats/timeseries', series),
      api('/api/v1/stats/filtered'),
      api('/api/v1/stats/realtime/visitors', { site_id: state.site }, { scoped: false }).catch(() => null),
      ...CARDS.map((card, i) => loadCard(card, i, seq)),
      loadFunnel(),
    ])
    if (seq !== loadSeq) return
    renderMetrics(aggregate.results, aggregate.comparison)
    renderChart(timeseries.results, iv, metric, aggregate.comparison)
    renderFiltered(filtered)
    renderImported(aggregate)
    noteSampling(aggregate)
    noteSampling(timeseries)
    $('live').textContent = live == null ? '' : `${integer.format(live)} current visitor${live === 1 ? '' : 's'}`
    document.title = `${state.site} · Glimpse`
    document.body.dataset.state = 'ready'
  } catch (e) {
    if (seq === loadSeq) fail(e)
  }
}

function init() {
  buildCards()
  initFunnelCard()
  $('login').addEventListener('submit', (e) => {
    e.preventDefault()
    const value = $('key').value.trim()
    if (!value) return
    sessionStorage.setItem(KEY_STORAGE, value)
    $('key').value = ''
    $('login-error').textContent = ''
    sites = []
    load()
  })
  $('signin').addEventListener('submit', async (e) => {
    e.preventDefault()
    const email = $('email').value.trim()
    const password = $('password').value
    if (!email || !password) return
    $('signin-error').textContent = ''
    try {
      me = await authPost('/api/auth/login', { email, password })
      $('password').value = ''
      sites = []
      load()
    } catch (err) {
      $('signin-error').textContent =
        err instanceof HttpError && err.status === 429 ? 'Too many attempts: wait a few minutes and try again.' : err.message
    }
  })
  $('signout').addEventListener('click', async () => {
    try {
      await authPost('/api/auth/logout')
    } catch {
      // signed out or not, the page forgets who it was
    }
    me = null
    sites = []
    if (location.hash) history.replaceState(null, '', location.pathname + location.search)
    load()
  })
  $('forget').addEventListener('click', () => {
    sessionStorage.removeItem(KEY_STORAGE)
    sites = []
    load()
  })
  $('site').addEventListener('change', (e) => {
    state.site = e.target.value
    state.filters = []
    writeUrl(true)
    load()
  })
  $('period').addEventListener('change', (e) => {
    state.period = e.target.value
    if (state.period !== 'custom' && state.date.includes(',')) state.date = ''
    // A custom range starts as the last 7 days (in this browser's calendar), then the dates
    // are picked.
    if (state.period === 'custom' && !state.date.includes(',')) state.date = `${daysAgo(6)},${daysAgo(0)}`
    writeUrl(true)
    load()
  })
  for (const id of ['from', 'to']) {
    $(id).addEventListener('change', () => {
      const range = readRange('from', 'to')
      if (!range) return
      state.date = range.join(',')
      writeUrl(true)
      load()
    })
  }
  $('comparison').addEventListener('change', (e) => {
    state.comparison = e.target.value
    // A custom comparison compares nothing until both of its dates are picked.
    writeUrl(true)
    load()
  })
  for (const id of ['compare-from', 'compare-to']) {
    $(id).addEventListener('change', () => {
      const range = readRange('compare-from', 'compare-to')
      if (!range) return
      ;[state.compareFrom, state.compareTo] = range
      writeUrl(true)
      load()
    })
  }
  $('chart-metric').addEventListener('change', (e) => {
    state.metric = e.target.value
    writeUrl(true)
    load()
  })
  $('chart-csv').append(csvButton('the chart', () => reports.chart()))
  $('headline-csv').append(csvButton('the headline figures', () => reports.headline()))
  $('date').addEventListener('change', (e) => {
    state.date = e.target.value
    writeUrl(true)
    load()
  })
  // #settings and #account links: a history entry each (popstate follows them as well).
  window.addEventListener('hashchange', () => load())
  window.addEventListener('popstate', () => {
    state = readUrl()
    load()
  })
  let resize
  window.addEventListener('resize', () => {
    clearTimeout(resize)
    resize = setTimeout(() => lastSeries && renderChart(...lastSeries), 150)
  })
  load()
}

init()
