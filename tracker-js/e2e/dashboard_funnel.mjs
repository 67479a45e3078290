// End-to-end driver for tests/dashboard_funnel.rs: real headless Chromium (puppeteer-core)
// opens the dashboard with an API key on a view with a filter, picks the year-over-year
// comparison, then a saved funnel in the Funnels card. It reports what the page showed (the
// card's steps, the headline tiles, the saved funnels offered) as one JSON line; the Rust test
// compares it with the stats API. Screenshots: dashboard-funnel.png,
// dashboard-funnel-mobile.png (and the card at phone size: dashboard-funnel-mobile-card.png).
//
//   BASE=http://127.0.0.1:PORT KEY=glimpse_… SITE=shop.example FUNNEL=Checkout \
//   VIEW='period=month&date=2026-03-15' SHOTS=../target CHROMIUM=/usr/bin/chromium \
//   node e2e/dashboard_funnel.mjs
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { launchChromium } from './chromium.mjs'

const { BASE: base, KEY: key, SITE: site, FUNNEL: funnel, VIEW: view = '', SHOTS: shots = '.' } = process.env
if (!base || !key || !site || !funnel) throw new Error('set BASE, KEY, SITE and FUNNEL')
const log = (...a) => console.error('[dashboard-funnel]', ...a)
const facts = { errors: [] }
const dir = mkdtempSync(join(tmpdir(), 'glimpse-chromium-'))

async function ready(page, what) {
  try {
    await page.waitForSelector('body[data-state=ready]', { timeout: 20_000 })
  } catch {
    const state = await page.evaluate(() => [document.body.dataset.state, document.getElementById('error').textContent])
    throw new Error(`${what}: the dashboard did not become ready (state ${state[0]}: ${state[1]})`)
  }
}

/** The Funnels card's steps once they show `name`'s, and the headline tiles. */
async function shown(page, name) {
  await page.waitForFunction((n) => document.getElementById('funnel-pick').value === n && !document.getElementById('funnel-steps').hasAttribute('aria-busy') && document.querySelector('.funnel-step'), { timeout: 20_000 }, name)
  return page.evaluate(() => {
    const steps = [...document.querySelectorAll('#funnel-steps .funnel-step')].map((s) => ({
      label: s.querySelector('.row-name').textContent,
      visitors: Number(s.dataset.visitors),
      conversion_rate: Number(s.dataset.conversion),
      dropoff: Number(s.dataset.dropoff),
      shown: s.querySelector('.funnel-figures').textContent,
    }))
    const headline = Object.fromEntries(
      [...document.querySelectorAll('.metric')].map((t) => [t.dataset.metric, { value: t.dataset.value, comparison: t.dataset.comparison ?? null }]),
    )
    return { steps, headline, params: Object.fromEntries(new URL(location.href).searchParams) }
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
  await page.setViewport({ width: 1280, height: 900 })
  await page.goto(`${base}/?site=${encodeURIComponent(site)}&${view}`)
  await page.waitForSelector('body[data-state=login]', { timeout: 10_000 })
  await page.type('#key', key)
  await page.click('#login button[type=submit]')
  await ready(page, 'after signing in')

  // Year over year, as a person picks it.
  await page.evaluate(() => (document.body.dataset.state = 'loading'))
  await page.select('#comparison', 'year_over_year')
  await ready(page, 'after picking year over year')
  facts.funnels = await page.$$eval('#funnel-pick option', (o) => o.map((x) => x.value))
  // The saved funnel, picked in the card.
  await page.select('#funnel-pick', funnel)
  const desktop = await shown(page, funnel)
  Object.assign(facts, desktop)
  await page.mouse.move(0, 0)
  await page.screenshot({ path: join(shots, 'dashboard-funnel.png'), fullPage: true })
  log('funnel shown', JSON.stringify(desktop.steps))

  // A phone: the same view (the funnel is in the URL now), nothing wider than the screen.
  await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 2, isMobile: true, hasTouch: true })
  await page.reload()
  await ready(page, 'on a phone')
  facts.mobile_steps = (await shown(page, funnel)).steps
  facts.mobile_overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
  await page.screenshot({ path: join(shots, 'dashboard-funnel-mobile.png'), fullPage: true })
  await page.$eval('#funnel-card', (e) => e.scrollIntoView())
  await page.screenshot({ path: join(shots, 'dashboard-funnel-mobile-card.png') })

  // The site's settings: the saved funnels listed, and a new one saved from the form.
  await page.setViewport({ width: 1280, height: 900 })
  await page.goto(`${base}/?site=${encodeURIComponent(site)}#settings`)
  await page.waitForSelector('[data-section=funnels] [data-funnel]', { timeout: 20_000 })
  const names = () => page.$$eval('[data-section=funnels] [data-funnel]', (rows) => rows.map((r) => r.dataset.funnel))
  facts.settings_funnels = await names()
  await page.type('#funnel-form input', 'Docs')
  await page.type('#funnel-form textarea', '/\ngoal: Signup\nDownload')
  await page.click('#funnel-form button[type=submit]')
  await page.waitForSelector('[data-section=funnels] [data-funnel="Docs"]', { timeout: 10_000 })
  facts.settings_after_save = await names()
  await (await page.$('[data-section=funnels]')).screenshot({ path: join(shots, 'settings-funnels.png') })
  log('settings shown')
} finally {
  await b.close()
  rmSync(dir, { recursive: true, force: true })
}
console.log(JSON.stringify(facts))
