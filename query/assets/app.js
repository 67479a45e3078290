// Glimpse dashboard: plain JavaScript over the stats API (/api/v1/…). Site, period, date and
// filters live in the URL (?site=&period=&date=&filters=), so a view can be bookmarked and
// shared; a share link adds &auth=TOKEN. People sign in with e-mail and password: the service
// sets an HttpOnly session cookie this script never sees. An API key entered in the other form
// is kept in sessionStorage only (never a cookie, never localStorage). Data from the API
// reaches the DOM only through textContent and attributes, never as HTML.
'use strict'

const KEY_STORAGE = 'glimpse.key'
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
  let answer = null
  try {
    answer = await response.json()
  } catch {
    // not JSON: the status says enough
  }
  if (!response.ok) throw new HttpError(response.status, (answer && answer.error) || `HTTP ${response.status}`)
  return answer
}

/** Who is signed in (null when nobody); says whether any user exists at all. */
async function whoAmI() {
  const response = await fetch('/api/auth/me', { headers: { Accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store' })
  let body = null
  try {
    body = await response.json()
  } catch {
    // not JSON
  }
  if (response.ok) return { me: body, usersExist: true }
  if (response.status === 401) return { me: null, usersExist: !body || body.users_exist !== false }
  throw new HttpError(response.status, (body && body.error) || `HTTP ${response.status}`)
}

async function api(path, params = {}, { scoped = true } = {}) {
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
  const response = await fetch(`${path}?${q}`, { headers, credentials, cache: 'no-store' })
  let body = null
  try {
    body = await response.json()
  } catch {
    // not JSON: the status says enough
  }
  if (!response.ok) throw new HttpError(response.status, (body && body.error) || `HTTP ${response.status}`)
  return body
}

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
      return `${v}%`
    case 'views_per_visit':
      return v.toFixed(2)
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

function renderMetrics(results) {
  const box = $('metrics')
  box.replaceChildren()
  for (const [metric, label] of HEADLINE) {
    const r = results[metric] || {}
    const tile = el('div', { class: 'metric', 'data-metric': metric, 'data-value': String(r.value ?? '') })
    tile.append(el('div', { class: 'metric-label', text: label }), el('div', { class: 'metric-value', text: formatMetric(metric, r.value) }))
    if (r.change != null) {
      // A lower bounce rate is better; for the rest, up is good.
      const good = metric === 'bounce_rate' ? r.change < 0 : r.change > 0
      const cls = r.change === 0 ? 'flat' : good ? 'up' : 'down'
      const arrow = r.change > 0 ? '↑' : r.change < 0 ? '↓' : '→'
      const unit = metric === 'bounce_rate' ? ' pts' : '%'
      tile.append(
        el('div', {
          class: `metric-change ${cls}`,
          'data-change': String(r.change),
          title: `previous period: ${formatMetric(metric, r.comparison_value)}`,
          text: `${arrow} ${Math.abs(r.change)}${unit}`,
        }),
      )
    }
    box.append(tile)
  }
}

function niceMax(v) {
  if (v <= 5) return 5
  const p = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p
  return 10 * p
}

let lastSeries = null
function renderChart(results, iv) {
  lastSeries = [results, iv]
  const box = $('chart')
  box.replaceChildren()
  const width = Math.max(box.clientWidth, 280)
  const height = width < 500 ? 180 : 240
  const pad = { l: 40, r: 8, t: 10, b: 24 }
  const w = width - pad.l - pad.r
  const h = height - pad.t - pad.b
  const max = niceMax(Math.max(1, ...results.map((r) => Math.max(r.visitors, r.pageviews))))
  const n = results.length
  const x = (i) => pad.l + (n <= 1 ? w / 2 : (i * w) / (n - 1))
  const y = (v) => pad.t + h - (v / max) * h
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': 'Visitors and page views over time' })
  for (const t of [0, max / 2, max]) {
    chart.append(svg('line', { x1: pad.l, x2: width - pad.r, y1: y(t), y2: y(t), class: 'grid-line' }))
    const label = svg('text', { x: pad.l - 6, y: y(t) + 4, 'text-anchor': 'end', class: 'axis' })
    label.textContent = formatNumber(t)
    chart.append(label)
  }
  const step = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(w / 70))))
  results.forEach((r, i) => {
    if (i % step === 0 || i === n - 1) {
      if (i === n - 1 && i % step !== 0 && i % step < step / 2) return
      const label = svg('text', { x: x(i), y: height - 6, 'text-anchor': i === 0 ? 'start' : i === n - 1 ? 'end' : 'middle', class: 'axis' })
      label.textContent = shortDate(r.date, iv)
      chart.append(label)
    }
  })
  const path = (metric) => results.map((r, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)},${y(r[metric]).toFixed(1)}`).join('')
  if (n > 0) {
    chart.append(svg('path', { d: `${path('pageviews')}L${x(n - 1)},${y(0)}L${x(0)},${y(0)}Z`, class: 'area-pageviews' }))
    chart.append(svg('path', { d: path('pageviews'), class: 'line-pageviews' }))
    chart.append(svg('path', { d: `${path('visitors')}L${x(n - 1)},${y(0)}L${x(0)},${y(0)}Z`, class: 'area-visitors' }))
    chart.append(svg('path', { d: path('visitors'), class: 'line-visitors' }))
  }
  // One hover target per bucket, with its numbers as a native tooltip.
  results.forEach((r, i) => {
    const half = n <= 1 ? w / 2 : w / (n - 1) / 2
    const hit = svg('rect', { x: x(i) - half, y: pad.t, width: 2 * half, height: h, class: 'hit' })
    const title = svg('title')
    title.textContent = `${r.date}: ${integer.format(r.visitors)} visitors, ${integer.format(r.pageviews)} page views`
    hit.append(title)
    chart.append(hit)
    if (n <= 40) chart.append(svg('circle', { cx: x(i), cy: y(r.visitors), r: 2.5, class: 'dot-visitors' }))
  })
  const legend = el(
    'div',
    { class: 'legend' },
    el('span', { class: 'key visitors', text: 'Visitors' }),
    el('span', { class: 'key pageviews', text: 'Page views' }),
  )
  box.append(chart, legend)
}

function renderRows(list, property, rows, metric) {
  list.replaceChildren()
  if (!rows.length) {
    list.append(el('li', { class: 'empty', text: 'No data for this period' }))
    return
  }
  const max = Math.max(1, ...rows.map((r) => r.visitors))
  const key = resultKey(property)
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
    list.append(el('li', { class: metric ? 'row wide' : 'row', 'data-property': property, 'data-value': value }, bar, name, ...cells))
  }
}

/** The field a breakdown row's value is in: `page` for event:page, `plan` for event:props:plan. */
function resultKey(property) {
  return property.startsWith('event:props:') ? property.slice(12) : property.split(':').pop()
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
  if (!tabs.length) {
    renderRows(card.list, '', [], null)
    card.list.firstChild.textContent = 'No custom properties in this period'
    return
  }
  const property = tabs[active][0]
  if (card.goals && !(siteGoals[state.site] || []).length) {
    renderRows(card.list, property, [], null)
    card.list.firstChild.textContent = 'No goals set for this site (add them in its settings)'
    return
  }
  const metric = card.goals ? 'conversion_rate' : card.events || card.props ? 'events' : null
  card.head.lastChild.textContent = card.goals ? 'CR' : metric ? 'Events' : ''
  card.head.classList.toggle('wide', !!metric)
  const limit = card.events || card.props ? 20 : 10
  const body = await api('/api/v1/stats/breakdown', { property, metrics: metric ? `visitors,${metric}` : 'visitors', limit })
  if (seq !== loadSeq) return
  let rows = body.results
  if (card.events) rows = rows.filter((r) => !NOT_EVENTS.has(r.name))
  // Visits without a campaign or events without the property are not worth a row.
  if (card.props || property.startsWith('visit:utm_')) rows = rows.filter((r) => r[resultKey(property)] !== '(none)')
  renderRows(card.list, property, rows.slice(0, 10), metric)
}

function buildCards() {
  const grid = $('cards')
  grid.replaceChildren()
  CARDS.forEach((card) => {
    card.tabList = el('div', { class: 'tabs', role: 'tablist' })
    card.head = el('div', { class: 'list-head' }, el('span', { text: '' }), el('span', { text: 'Visitors' }), el('span', { text: '' }))
    card.list = el('ol', { class: 'rows' })
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
  $('period').hidden = $('date').hidden = view !== 'dash'
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
    const period = $('period')
    period.querySelector('option[value=custom]').hidden = state.period !== 'custom'
    period.value = state.period
    $('date').value = /^\d{4}-\d{2}-\d{2}$/.test(state.date) ? state.date : ''
    $('date').disabled = state.period === 'custom' || state.period === 'realtime'
    renderFilters()
    const realtime = state.period === 'realtime'
    const iv = interval()
    const props = await api('/api/v1/stats/props')
    CARDS[CARDS.length - 1].tabs = props.results.slice(0, 6).map((p) => [`event:props:${p}`, p])
    const [aggregate, series, filtered, live] = await Promise.all([
      api('/api/v1/stats/aggregate', { metrics: HEADLINE.map((m) => m[0]).join(','), ...(realtime ? {} : { compare: 'previous_period' }) }),
      api('/api/v1/stats/timeseries', { metrics: 'visitors,pageviews', interval: iv }),
      api('/api/v1/stats/filtered'),
      api('/api/v1/stats/realtime/visitors', { site_id: state.site }, { scoped: false }).catch(() => null),
      ...CARDS.map((card, i) => loadCard(card, i, seq)),
    ])
    if (seq !== loadSeq) return
    renderMetrics(aggregate.results)
    renderChart(series.results, iv)
    renderFiltered(filtered)
    renderImported(aggregate)
    $('live').textContent = live == null ? '' : `${integer.format(live)} current visitor${live === 1 ? '' : 's'}`
    document.title = `${state.site} · Glimpse`
    document.body.dataset.state = 'ready'
  } catch (e) {
    if (seq === loadSeq) fail(e)
  }
}

function init() {
  buildCards()
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
    writeUrl(true)
    load()
  })
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
