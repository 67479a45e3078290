// Glimpse dashboard, the Funnels card: one of the site's saved funnels (picked in the card, kept
// in the URL as &funnel=NAME) counted by POST /api/v2/funnel for the view's period and filters,
// shown as a bar per step with its visitors, conversion from the first step and drop-off from
// the step before. Loaded before app.js, whose helpers ($, el, api, key, state, writeUrl,
// fail, parseFilter, formatNumber, isDate, validRange, HttpError, jsonAnswer) it uses once the page runs. Data from
// the API reaches the DOM only as text and attributes.
'use strict'

/** The view's period as v2's `date_range` (and `date`); null in realtime, which funnels do
 * not count, or while a custom range is incomplete. */
function funnelRange() {
  if (state.period === 'realtime') return null
  if (state.period === 'custom') {
    const [from, to] = state.date.split(',')
    return validRange(from, to) ? { date_range: [from, to] } : null
  }
  return isDate(state.date) ? { date_range: state.period, date: state.date } : { date_range: state.period }
}

/** The view's filters in v2's form: `event:page==/a|/b` → ["is", "event:page", ["/a", "/b"]]. */
function funnelFilters() {
  const ops = { '==': 'is', '!=': 'is_not', '~': 'contains' }
  return state.filters
    .map(parseFilter)
    .filter((f) => ops[f.op])
    .map((f) => [ops[f.op], f.property, f.values])
}

/** POST /api/v2/funnel with the page's credentials (share token, key or session cookie). */
async function funnelPost(body) {
  const headers = { Accept: 'application/json', 'Content-Type': 'application/json' }
  if (!state.auth && key()) headers.Authorization = `Bearer ${key()}`
  const q = state.auth ? `?auth=${encodeURIComponent(state.auth)}` : ''
  const response = await fetch(`/api/v2/funnel${q}`, {
    method: 'POST',
    headers,
    body: JSON.stringify(body),
    credentials: state.auth || key() ? 'omit' : 'same-origin',
    // A signed-in POST names its origin (the page's no-referrer policy would send `null`).
    referrerPolicy: 'strict-origin',
    cache: 'no-store',
  })
  return jsonAnswer(response)
}

/** The latest funnel load: an older answer is dropped. */
let funnelSeq = 0

/** Fills the Funnels card for the view; its own errors stay in the card. The steps are marked
 * busy from the start (the list of funnels is read first), so that nothing reads old figures
 * as the new funnel's. */
async function loadFunnel() {
  const seq = ++funnelSeq
  const body = $('funnel-steps')
  body.setAttribute('aria-busy', 'true')
  try {
    await fillFunnel(seq)
  } finally {
    if (seq === funnelSeq) body.removeAttribute('aria-busy')
  }
}

async function fillFunnel(seq) {
  const card = $('funnel-card')
  const pick = $('funnel-pick')
  const body = $('funnel-steps')
  const note = $('funnel-note')
  const say = (text) => {
    body.replaceChildren(el('li', { class: 'empty', text }))
    note.textContent = ''
  }
  let saved
  try {
    saved = (await api('/api/v1/sites/funnels', { site_id: state.site }, { scoped: false })).funnels
  } catch (e) {
    // A share link or a stats key may not list them: no card then.
    if (e instanceof HttpError && [401, 403, 404].includes(e.status)) {
      card.hidden = true
      return
    }
    throw e
  }
  if (seq !== funnelSeq) return
  pick.replaceChildren(...saved.map((f) => el('option', { value: f.name, text: f.name })))
  pick.disabled = saved.length < 2
  // No saved funnel: no card (they are added in the site's settings).
  card.hidden = !saved.length
  if (!saved.length) return
  const chosen = saved.some((f) => f.name === state.funnel) ? state.funnel : saved[0].name
  pick.value = chosen
  const range = funnelRange()
  if (!range) {
    say('Funnels count whole days: pick another period')
    return
  }
  try {
    const answer = await funnelPost({ site_id: state.site, ...range, filters: funnelFilters(), funnel: chosen })
    if (seq === funnelSeq) renderFunnel(answer)
  } catch (e) {
    if (seq === funnelSeq) say(`The funnel could not be counted: ${e.message}`)
  }
}

function renderFunnel(answer) {
  const body = $('funnel-steps')
  const first = Math.max(1, answer.steps[0].visitors)
  body.replaceChildren(
    ...answer.steps.map((s, i) => {
      const bar = el('span', { class: 'bar' })
      bar.style.width = `${(s.visitors / first) * 100}%` // CSSOM, allowed by the CSP
      const figures = [
        el('span', { class: 'funnel-visitors', text: `${formatNumber(s.visitors)} visitors` }),
        el('span', { class: 'funnel-rate', text: `${s.conversion_rate}%` }),
      ]
      if (i > 0) figures.push(el('span', { class: 'funnel-dropoff', title: 'Left after the step before', text: `−${formatNumber(s.dropoff)} (${s.dropoff_percentage}%)` }))
      return el(
        'li',
        { class: 'funnel-step', 'data-step': String(i + 1), 'data-visitors': String(s.visitors), 'data-conversion': String(s.conversion_rate), 'data-dropoff': String(s.dropoff) },
        el('div', { class: 'funnel-label' }, el('span', { class: 'funnel-index', text: `${i + 1}` }), el('span', { class: 'row-name', text: s.label })),
        el('div', { class: 'funnel-track' }, bar),
        el('div', { class: 'funnel-figures' }, ...figures),
      )
    }),
  )
  const m = answer.meta
  $('funnel-note').textContent = `${formatNumber(m.converted)} of ${formatNumber(m.entered)} visitors went through every step (${m.conversion_rate}%), each within one visit.`
}

function initFunnelCard() {
  $('funnel-pick').addEventListener('change', (e) => {
    state.funnel = e.target.value
    writeUrl(true)
    loadFunnel().catch(fail)
  })
}
