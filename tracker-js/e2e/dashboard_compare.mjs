// End-to-end driver for tests/dashboard_compare.rs: real headless Chromium (puppeteer-core)
// opens the dashboard with an API key, picks the year-over-year comparison, then a custom
// range from the date inputs compared with custom dates, a chart metric, and downloads a
// breakdown's CSV. It reports what the page showed (headline tiles, chart buckets, breakdown
// rows, the CSV's text) as one JSON line; the Rust test compares it with the stats API.
// Screenshots: dashboard-yoy.png, dashboard-custom.png, dashboard-compare-mobile.png (and its
// first screen and the cards' at phone size: dashboard-compare-mobile-top|cards.png).
//
//   BASE=http://127.0.0.1:PORT KEY=glimpse_… SITE=example.com VIEW='period=month&date=2026-03-15' \
//   FROM=2026-03-10 TO=2026-03-16 COMPARE_FROM=2026-03-01 COMPARE_TO=2026-03-07 \
//   SHOTS=../target CHROMIUM=/usr/bin/chromium node e2e/dashboard_compare.mjs
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { check, launchChromium } from './chromium.mjs'

const { BASE: base, KEY: key, SITE: site, VIEW: view = '', SHOTS: shots = '.' } = process.env
const { FROM: from, TO: to, COMPARE_FROM: compareFrom, COMPARE_TO: compareTo } = process.env
if (!base || !key || !site || !from || !to || !compareFrom || !compareTo) {
  throw new Error('set BASE, KEY, SITE, FROM, TO, COMPARE_FROM and COMPARE_TO')
}
const log = (...a) => console.error('[dashboard-compare]', ...a)
const facts = { errors: [] }
const dir = mkdtempSync(join(tmpdir(), 'glimpse-chromium-'))
const downloads = mkdtempSync(join(tmpdir(), 'glimpse-downloads-'))

async function ready(page, what) {
  try {
    await page.waitForSelector('body[data-state=ready]', { timeout: 20_000 })
  } catch {
    const state = await page.evaluate(() => [document.body.dataset.state, document.getElementById('error').textContent])
    throw new Error(`${what}: the dashboard did not become ready (state ${state[0]}: ${state[1]})`)
  }
}

/** Changes a control the way a person does (a select's option, a date picked), then waits
 * for the page to load the view again. */
async function change(page, selector, value, what) {
  await page.evaluate(() => (document.body.dataset.state = 'loading'))
  await pick(page, selector, value)
  await ready(page, what)
}

/** Sets a control without waiting: half of a range loads nothing yet. */
async function pick(page, selector, value) {
  await page.$eval(
    selector,
    (e, v) => {
      e.value = v
      e.dispatchEvent(new Event('change', { bubbles: true }))
    },
    value,
  )
}

/** Everything the view shows that the API can check. */
async function shown(page) {
  return page.evaluate(() => {
    const params = Object.fromEntries(new URL(location.href).searchParams)
    const headline = Object.fromEntries(
      [...document.querySelectorAll('.metric')].map((t) => [
        t.dataset.metric,
        {
          value: t.dataset.value,
          comparison: t.dataset.comparison ?? null,
          change: t.querySelector('.metric-change')?.dataset.change ?? null,
          change_text: t.querySelector('.metric-change')?.textContent ?? null,
        },
      ]),
    )
    const chart = [...document.querySelectorAll('#chart rect.hit')].map((r) => ({
      date: r.dataset.date,
      value: r.dataset.value,
      comparison_date: r.dataset.comparisonDate ?? null,
      comparison: r.dataset.comparison ?? null,
    }))
    const sources = [...document.querySelectorAll('[data-card="Sources"] li.row')].map((r) => ({
      value: r.dataset.value,
      visitors: r.querySelector('.row-value').textContent,
      change: r.dataset.change ?? null,
    }))
    const legend = [...document.querySelectorAll('#chart .legend .key')].map((k) => k.textContent)
    const line = !!document.querySelector('#chart path.line-comparison')
    return { params, headline, chart, sources, legend, comparison_line: line, chart_title: document.getElementById('chart-title').textContent }
  })
}

const b = await launchChromium(dir, process.env.CHROMIUM || '/usr/bin/chromium')
try {
  const page = await b.newPage()
  page.on('console', (m) => {
    const url = m.location()?.url || ''
    const expected = m.text().includes('401') && url.endsWith('/api/auth/me')
    if (m.type() === 'error' && !expected) facts.errors.push(`console: ${m.text()}`)
  })
  page.on('pageerror', (e) => facts.errors.push(e.message))
  await page.goto(`${base}/?site=${encodeURIComponent(site)}&${view}`)
  await page.waitForSelector('body[data-state=login]', { timeout: 10_000 })
  await page.type('#key', key)
  await page.click('#login button[type=submit]')
  await ready(page, 'after signing in')
  facts.pickers = await page.$$eval('#comparison option', (o) => o.map((x) => x.value))
  facts.chart_metrics = await page.$$eval('#chart-metric option', (o) => o.map((x) => x.value))

  // Year over year.
  await change(page, '#comparison', 'year_over_year', 'after picking year over year')
  facts.yoy = await shown(page)
  await page.mouse.move(0, 0)
  await page.screenshot({ path: join(shots, 'dashboard-yoy.png'), fullPage: true })
  log('year over year shown')

  // A custom range from the date inputs, compared with custom dates.
  await change(page, '#period', 'custom', 'after picking a custom range')
  facts.custom_inputs_shown = await page.$eval('#range', (e) => !e.hidden)
  await change(page, '#from', from, 'after picking the first day')
  await change(page, '#to', to, 'after picking the last day')
  await page.evaluate(() => (document.body.dataset.state = 'loading'))
  await page.select('#comparison', 'custom')
  await ready(page, 'after picking a custom comparison')
  facts.compare_inputs_shown = await page.$eval('#compare-range', (e) => !e.hidden)
  await pick(page, '#compare-from', compareFrom)
  await change(page, '#compare-to', compareTo, 'after picking the compared last day')
  facts.custom = await shown(page)
  // A chart metric other than visitors.
  await change(page, '#chart-metric', 'bounce_rate', 'after picking the bounce rate')
  facts.bounce = await shown(page)
  await page.mouse.move(0, 0)
  await page.screenshot({ path: join(shots, 'dashboard-custom.png'), fullPage: true })
  log('custom range shown')

  // The Sources card's CSV, downloaded as a person would.
  const cdp = await page.createCDPSession()
  await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: downloads })
  await page.click('[data-card="Sources"] button.csv')
  const deadline = Date.now() + 15_000
  let file
  while (!file && Date.now() < deadline) {
    file = readdirSync(downloads).find((f) => f.endsWith('.csv'))
    if (!file) await new Promise((r) => setTimeout(r, 100))
  }
  check(file, 'the CSV download did not arrive')
  await new Promise((r) => setTimeout(r, 300)) // written in full
  facts.csv_name = file
  facts.csv = readFileSync(join(downloads, file), 'utf8')

  // A phone: the same view, nothing wider than the screen.
  await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 2, isMobile: true, hasTouch: true })
  await page.reload()
  await ready(page, 'on a phone')
  facts.mobile = await shown(page)
  facts.mobile_overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
  await page.screenshot({ path: join(shots, 'dashboard-compare-mobile.png'), fullPage: true })
  // And two screens of it at the phone's own size, for a closer look.
  await page.screenshot({ path: join(shots, 'dashboard-compare-mobile-top.png') })
  await page.$eval('[data-card="Sources"]', (e) => e.scrollIntoView())
  await page.screenshot({ path: join(shots, 'dashboard-compare-mobile-cards.png') })
} finally {
  await b.close()
  rmSync(dir, { recursive: true, force: true })
  rmSync(downloads, { recursive: true, force: true })
}
console.log(JSON.stringify(facts))
