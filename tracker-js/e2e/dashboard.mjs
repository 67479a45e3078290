// End-to-end driver for tests/dashboard.rs: real headless Chromium (puppeteer-core over
// Debian's chromium) opens the query service's dashboard, signs in with an API key, clicks
// breakdown rows, goes back, reloads, opens a share link at phone width, and signs in with an
// e-mail and password (in a browser context of its own) and out again. It reports what the
// page showed as one JSON line of facts; the Rust test compares them with the stats API.
//
//   BASE=http://127.0.0.1:PORT KEY=glimpse_… SITE=example.com SHARE=TOKEN \
//   EMAIL=viewer@example.com PASSWORD=… \
//   VIEW='period=7d&date=2026-03-31' SHOTS=../target CHROMIUM=/usr/bin/chromium \
//   node e2e/dashboard.mjs
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { check, launchChromium } from './chromium.mjs'

const { BASE: base, KEY: key, SITE: site, SHARE: share, VIEW: view = '', SHOTS: shots = '.', IMPORTED_SITE: importedSite } = process.env
const { EMAIL: email, PASSWORD: password } = process.env
const chromium = process.env.CHROMIUM || '/usr/bin/chromium'
if (!base || !key || !site || !share || !importedSite || !email || !password) {
  throw new Error('set BASE, KEY, SITE, SHARE, IMPORTED_SITE, EMAIL and PASSWORD')
}

const log = (...a) => console.error('[dashboard]', ...a)
const facts = { errors: [], api_requests: 0, api_requests_without_auth: 0, api_requests_with_cookie: 0 }

const dir = mkdtempSync(join(tmpdir(), 'glimpse-chromium-'))
async function launch() {
  return launchChromium(dir, chromium)
}

/** A page whose console errors, page errors (CSP violations among them) and API requests are recorded. */
async function open(b, name) {
  const page = await b.newPage()
  page.on('console', (m) => {
    // "Not signed in" is how `/api/auth/me` answers a visitor without a session (and a wrong
    // password how sign-in answers): expected 401s, which Chromium logs as errors.
    const url = m.location()?.url || ''
    const expected = m.text().includes('401') && (url.endsWith('/api/auth/me') || (name === 'signin' && url.endsWith('/api/auth/login')))
    if (m.type() === 'error' && !expected) facts.errors.push(`${name}: console: ${m.text()}`)
  })
  page.on('pageerror', (e) => facts.errors.push(`${name}: ${e.message}`))
  page.on('requestfailed', (r) => facts.errors.push(`${name}: request failed: ${r.url()} ${r.failure()?.errorText}`))
  page.on('request', (r) => {
    // The sign-in endpoints are not the stats API: they carry no key by design.
    if (!r.url().startsWith(`${base}/api/`) || r.url().startsWith(`${base}/api/auth/`)) return
    if (name === 'signin') return // signed in: neither key nor share token, by design
    facts.api_requests++
    const h = r.headers()
    if (!h.authorization && !new URL(r.url()).searchParams.get('auth')) facts.api_requests_without_auth++
    if (h.cookie) facts.api_requests_with_cookie++
  })
  return page
}

/** Waits until the dashboard has rendered everything for the current URL. */
async function ready(page, what) {
  try {
    await page.waitForSelector('body[data-state=ready]', { timeout: 20_000 })
  } catch (e) {
    const state = await page.evaluate(() => [document.body.dataset.state, document.getElementById('error').textContent])
    throw new Error(`${what}: the dashboard did not become ready (state ${state[0]}: ${state[1]})`)
  }
}

/** The headline tiles: metric → {value (exact, from data-value), text (as shown), change}. */
const headline = (page) =>
  page.$$eval('.metric', (tiles) =>
    Object.fromEntries(
      tiles.map((t) => [
        t.dataset.metric,
        {
          value: t.dataset.value,
          text: t.querySelector('.metric-value').textContent,
          change: t.querySelector('.metric-change')?.dataset.change ?? null,
        },
      ]),
    ),
  )
const filtersOf = (page) => page.evaluate(() => new URL(location.href).searchParams.get('filters'))

/** Clicks the first row of a card; returns the property and value it filters by. */
async function clickFirstRow(page, card) {
  const row = await page.$(`[data-card="${card}"] li.row`)
  check(row, `the ${card} card has no rows`)
  const clicked = await row.evaluate((r) => ({ property: r.dataset.property, value: r.dataset.value }))
  await page.click(`[data-card="${card}"] li.row button.row-name`)
  return clicked
}

async function desktop(b) {
  const page = await open(b, 'desktop')
  await page.goto(`${base}/?site=${encodeURIComponent(site)}&${view}`)
  await page.waitForSelector('body[data-state=login]', { timeout: 10_000 })
  await page.type('#key', key)
  await page.click('#login button[type=submit]')
  await ready(page, 'after signing in')
  facts.before = await headline(page)
  facts.sites = await page.$$eval('#site option', (o) => o.map((x) => x.value))
  facts.key_settings_hidden = await page.$eval('#nav-settings', (e) => e.hidden)
  facts.rows = await page.$$eval('[data-card]', (cards) =>
    Object.fromEntries(cards.map((c) => [c.dataset.card, [...c.querySelectorAll('li.row')].map((r) => r.dataset.value)])),
  )
  facts.goals = await page.$$eval('[data-card="Goals"] li.row', (rows) =>
    rows.map((r) => ({ value: r.dataset.value, cells: [...r.querySelectorAll('.row-value')].map((c) => c.textContent) })),
  )
  facts.chart_points = await page.$$eval('#chart rect.hit', (r) => r.length)
  facts.chart_labels = await page.$$eval('#chart text.axis', (t) => t.map((x) => x.textContent))
  facts.filtered_note = await page.$eval('#filtered', (e) => e.textContent)
  facts.storage = await page.evaluate(() => ({
    session: Object.keys(sessionStorage),
    local: Object.keys(localStorage),
    cookie: document.cookie,
  }))
  facts.cookies = (await page.cookies()).length
  // The key as entered must not be anywhere in the URL.
  check(!page.url().includes(key), 'the API key is in the URL')
  await page.mouse.move(0, 0) // no hover highlight in the picture
  await page.screenshot({ path: join(shots, 'dashboard.png'), fullPage: true })

  // Click a source: the URL carries the filter and every number is the filtered one.
  facts.click1 = await clickFirstRow(page, 'Sources')
  await ready(page, 'after the first click')
  facts.url_after1 = page.url()
  facts.filters_after1 = await filtersOf(page)
  facts.after1 = await headline(page)
  facts.chips_after1 = await page.$$eval('.chip', (c) => c.map((x) => x.dataset.filter))

  // And a page: both filters.
  facts.click2 = await clickFirstRow(page, 'Pages')
  await ready(page, 'after the second click')
  facts.filters_after2 = await filtersOf(page)
  facts.after2 = await headline(page)
  await page.mouse.move(0, 0)
  await page.screenshot({ path: join(shots, 'dashboard-filtered.png'), fullPage: true })

  // Back: the page filter is gone again.
  await page.goBack()
  await ready(page, 'after going back')
  facts.filters_after_back = await filtersOf(page)
  facts.after_back = await headline(page)

  // Removing the remaining filter's chip: back to the unfiltered numbers.
  await page.click('.chip-remove')
  await ready(page, 'after removing the filter')
  facts.filters_after_remove = await filtersOf(page)
  facts.after_remove = await headline(page)

  // A reload in the same tab keeps the key (sessionStorage): no sign-in form.
  await page.reload()
  await ready(page, 'after a reload')
  facts.after_reload = await headline(page)

  // The period picker: one day in hours, then the last 30 minutes (no comparison there).
  await page.select('#period', 'day')
  await ready(page, 'after picking a day')
  facts.day_period = await page.evaluate(() => new URL(location.href).searchParams.get('period'))
  facts.day_points = await page.$$eval('#chart rect.hit', (r) => r.length)
  facts.day = await headline(page)
  await page.select('#period', 'realtime')
  await ready(page, 'after picking the last 30 minutes')
  facts.realtime_points = await page.$$eval('#chart rect.hit', (r) => r.length)

  // A site with data imported from Plausible: the figures include it and a note says so;
  // a filtered view leaves it out and says that instead.
  await page.goto(`${base}/?site=${encodeURIComponent(importedSite)}&${view}`)
  await ready(page, 'the site with imported data')
  facts.imported = await headline(page)
  facts.imported_note = await page.$eval('#imported', (e) => (e.hidden ? null : e.textContent))
  await page.screenshot({ path: join(shots, 'dashboard-imported.png'), fullPage: true })
  await page.goto(`${base}/?site=${encodeURIComponent(importedSite)}&${view}&filters=${encodeURIComponent('visit:country==DE')}`)
  await ready(page, 'the site with imported data, filtered')
  facts.imported_filtered_note = await page.$eval('#imported', (e) => (e.hidden ? null : e.textContent))
  await page.close()
}

async function mobile(b) {
  // A new tab has no session: a share link needs no key.
  const page = await open(b, 'mobile')
  await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 2, isMobile: true, hasTouch: true })
  await page.goto(`${base}/?site=${encodeURIComponent(site)}&auth=${encodeURIComponent(share)}&${view}`)
  await ready(page, 'the share link at phone width')
  facts.share = await headline(page)
  facts.share_sites = await page.$$eval('#site option', (o) => o.map((x) => x.value))
  facts.share_forget_hidden = await page.$eval('#forget', (e) => e.hidden)
  facts.share_nav_hidden = await page.$eval('#nav', (e) => e.hidden)
  facts.mobile_overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
  await page.screenshot({ path: join(shots, 'dashboard-mobile.png'), fullPage: true })
  await page.close()

  // A wrong token is an error shown on the page, not a sign-in form.
  const bad = await open(b, 'bad-share')
  await bad.goto(`${base}/?site=${encodeURIComponent(site)}&auth=wrong-token&${view}`)
  await bad.waitForSelector('body[data-state=error]', { timeout: 10_000 })
  facts.bad_share_error = await bad.$eval('#error', (e) => e.textContent)
  await bad.close()
  // That 401 is expected: it is the only console error allowed.
  facts.errors = facts.errors.filter((e) => !(e.startsWith('bad-share: console:') && e.includes('401')))
}

/** Signs in with e-mail and password in a fresh browser context (its own cookies), checks
 * what a viewer of one site sees, and signs out. */
async function signin(b) {
  const context = await b.createBrowserContext()
  const page = await open(context, 'signin')
  await page.goto(`${base}/?site=${encodeURIComponent(site)}&${view}`)
  await page.waitForSelector('body[data-state=login]', { timeout: 10_000 })
  facts.signin_first_user_hidden = await page.$eval('#first-user', (e) => e.hidden)
  // The sign-in page at phone width: nothing wider than the screen.
  await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 1, isMobile: true, hasTouch: true })
  facts.signin_mobile_overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
  await page.screenshot({ path: join(shots, 'dashboard-signin-mobile.png'), fullPage: true })
  await page.setViewport({ width: 1366, height: 813 })
  await page.type('#email', email)
  await page.type('#password', 'not-the-password')
  await page.click('#signin button[type=submit]')
  await page.waitForFunction(() => document.getElementById('signin-error').textContent !== '', { timeout: 10_000 })
  facts.signin_wrong = await page.$eval('#signin-error', (e) => e.textContent)
  await page.$eval('#password', (e) => {
    e.value = ''
  })
  await page.type('#password', password)
  await page.click('#signin button[type=submit]')
  await ready(page, 'after signing in with a password')
  facts.signin_headline = await headline(page)
  facts.signin_sites = await page.$$eval('#site option', (o) => o.map((x) => x.value))
  facts.signin_who = await page.$eval('#who', (e) => (e.hidden ? null : e.textContent))
  facts.signin_forget_hidden = await page.$eval('#forget', (e) => e.hidden)
  facts.signin_settings_hidden = await page.$eval('#nav-settings', (e) => e.hidden)
  facts.signin_account_hidden = await page.$eval('#nav-account', (e) => e.hidden)
  facts.signin_document_cookie = await page.evaluate(() => document.cookie)
  facts.signin_cookies = (await page.cookies()).map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite }))
  facts.signin_password_left = await page.$eval('#password', (e) => e.value)
  await page.screenshot({ path: join(shots, 'dashboard-signed-in.png'), fullPage: false })
  await page.click('#signout')
  await page.waitForSelector('body[data-state=login]', { timeout: 10_000 })
  facts.signed_out_cookies = (await page.cookies()).length
  await page.close()
  await context.close()
}

let exit = 0
const watchdog = setTimeout(() => {
  log('timed out after 120 s')
  process.exit(3)
}, 120_000)
let b
try {
  b = await launch()
  facts.chromium = await b.version()
  await desktop(b)
  await mobile(b)
  await signin(b)
  console.log(JSON.stringify(facts))
} catch (e) {
  log(e.stack || String(e))
  exit = 1
} finally {
  if (b) await b.close().catch(() => {})
  rmSync(dir, { recursive: true, force: true })
  clearTimeout(watchdog)
}
process.exit(exit)
