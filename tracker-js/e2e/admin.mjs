// End-to-end driver for tests/admin_ui.rs: real headless Chromium runs the dashboard's admin
// side. The owner signs in, adds a site, copies its tracker snippet, a page with that snippet
// (served here, at the site's own host name mapped to 127.0.0.1) sends events to the
// collector until the settings page says they arrived; then a goal, a share link opened in a
// fresh context, members, keys, the audit log, a configured site's read-only settings, the
// invitation page, and a password change. One JSON line of facts at the end.
//
//   BASE=http://127.0.0.1:PORT EMAIL=owner@… PASSWORD=… NEW_PASSWORD=… SITE=shop.test \
//   CONFIGURED_SITE=example.com INVITEE=viewer@… INVITEE_PASSWORD=… SHOTS=dir node e2e/admin.mjs
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { check, launchChromium } from './chromium.mjs'

const env = process.env
const { BASE: base, EMAIL: email, PASSWORD: password, NEW_PASSWORD: newPassword, SITE: site } = env
const { CONFIGURED_SITE: configuredSite, INVITEE: invitee, INVITEE_PASSWORD: inviteePassword, SHOTS: shots = '.' } = env
if (!base || !email || !password || !newPassword || !site || !configuredSite || !invitee || !inviteePassword) {
  throw new Error('set BASE, EMAIL, PASSWORD, NEW_PASSWORD, SITE, CONFIGURED_SITE, INVITEE and INVITEE_PASSWORD')
}
mkdirSync(shots, { recursive: true })
const log = (...a) => console.error('[admin]', ...a)
const facts = { errors: [] }
const DESKTOP = { width: 1280, height: 900 }
const PHONE = { width: 390, height: 844, deviceScaleFactor: 2, isMobile: true, hasTouch: true }

// The site's pages: whatever snippet the owner copied, served at http://SITE:PORT/.
let snippet = ''
const server = createServer((request, response) => {
  response.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' })
  response.end(`<!doctype html><html><head><title>Shop</title>${snippet}</head><body><h1>Shop ${request.url}</h1></body></html>`)
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const sitePort = server.address().port

/** A page whose console and page errors are recorded (with the URL they are about). */
async function open(context, name, viewport = DESKTOP) {
  const page = await context.newPage()
  await page.setViewport(viewport)
  page.on('console', (m) => {
    if (m.type() === 'error') facts.errors.push(`${name}: ${m.text()} @ ${m.location()?.url || ''}`)
  })
  page.on('pageerror', (e) => facts.errors.push(`${name}: page error: ${e.message}`))
  return page
}

const ready = (page, what, timeout = 20_000) =>
  page.waitForSelector('body[data-state=ready]', { timeout }).catch(async () => {
    const why = await page.evaluate(() => `${document.body.dataset.state}: ${document.getElementById('error').textContent}`)
    throw new Error(`${what}: the page did not become ready (${why})`)
  })
const text = (page, selector) => page.$eval(selector, (e) => e.textContent.trim()).catch(() => null)
const overflow = (page) => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
/** Waits for `selector` to have rows that are not the "None yet" placeholder, or an error. */
async function listed(page, name) {
  await page.waitForFunction(
    (n) => {
      const list = document.querySelector(`[data-list=${n}]`)
      const line = list?.nextElementSibling
      return list && (list.querySelector('li:not(.empty)') || list.querySelector('li.empty') || line?.textContent)
    },
    { timeout: 10_000 },
    name,
  )
  return page.evaluate((n) => {
    const list = document.querySelector(`[data-list=${n}]`)
    return { rows: [...list.querySelectorAll('li:not(.empty)')].map((li) => li.textContent), error: list.nextElementSibling.textContent }
  }, name)
}
async function fill(page, selector, value) {
  await page.$eval(selector, (e) => {
    e.value = ''
  })
  await page.type(selector, value)
}

async function owner(b) {
  const context = await b.createBrowserContext()
  await context.overridePermissions(base, ['clipboard-read', 'clipboard-write', 'clipboard-sanitized-write'])
  const page = await open(context, 'owner')
  await page.emulateTimezone('Europe/Berlin') // the Add site form preselects the browser's zone
  await page.goto(`${base}/`)
  await page.waitForSelector('body[data-state=login]', { timeout: 10_000 })
  await page.type('#email', email)
  await page.type('#password', password)
  await page.click('#signin button[type=submit]')
  await ready(page, 'signed in')
  facts.nav_before = await page.$$eval('#nav a', (a) => a.filter((x) => !x.hidden).map((x) => x.textContent))

  // Add a site.
  await page.click('#nav-add-site')
  await page.waitForSelector('[data-view=add-site]')
  facts.zone_preselected = await page.$eval('#add-site-form select', (s) => s.value)
  facts.zone_count = await page.$eval('#add-site-form select', (s) => s.options.length)
  await page.type('#add-site-form input', site)
  await page.click('#add-site-form button[type=submit]')
  await page.waitForSelector('[data-view=settings]', { timeout: 10_000 })
  await ready(page, 'settings of the new site')
  facts.settings_title = await text(page, '[data-view=settings] h1')
  facts.url_after_add = page.url()
  facts.site_options = await page.$$eval('#site option', (o) => o.map((x) => x.value))

  // The snippet, copied with the button, is the page's; it is what the site's pages get.
  facts.variants = await page.$$eval('[data-section=tracker] select option', (o) => o.map((x) => x.value))
  facts.snippet_shown = await text(page, '#snippet')
  await page.click('[data-section=tracker] button.copy')
  await page.waitForSelector('[data-section=tracker] button.copy[data-copied]')
  facts.copy_ok = await page.$eval('[data-section=tracker] button.copy', (b) => b.dataset.copied)
  facts.clipboard = await page.evaluate(() => navigator.clipboard.readText())
  facts.received_before = await page.$eval('#received', (e) => e.dataset.received)
  facts.received_text_before = await text(page, '#received')
  snippet = facts.clipboard

  // A visitor opens the site's page; the registry reaches the collector within seconds, so
  // the page is visited again until the settings page turns green.
  const visitor = await b.createBrowserContext()
  const shop = await visitor.newPage()
  await shop.evaluateOnNewDocument(() => {
    window.__glimpse_test = true // puppeteer's navigator.webdriver would silence the tracker
  })
  const deadline = Date.now() + 45_000
  let visits = 0
  for (;;) {
    await shop.goto(`http://${site}:${sitePort}/?visit=${visits++}`)
    const green = await page
      .waitForSelector('#received[data-received=true]', { timeout: 4_000 })
      .then(() => true)
      .catch(() => false)
    if (green) break
    check(Date.now() < deadline, `the settings page still says "${await text(page, '#received')}" after ${visits} visits`)
  }
  facts.received_text = await text(page, '#received')
  facts.visits = visits
  await visitor.close()

  // The time zone, changed.
  await page.select('#timezone-form select', 'Asia/Tokyo')
  await page.click('#timezone-form button[type=submit]')
  await page.waitForFunction(() => document.querySelector('#timezone-form .saved').textContent, { timeout: 10_000 })
  facts.timezone_saved = await text(page, '#timezone-form .saved')

  // A page goal added and deleted again, and an event goal that stays.
  await page.select('#goal-form select', 'page')
  await page.type('#goal-form input', '/pricing')
  await page.click('#goal-form button[type=submit]')
  await page.waitForSelector('[data-goal="Visit /pricing"]', { timeout: 10_000 })
  facts.goals_with_page = (await listed(page, 'goals')).rows
  await page.click('[data-goal="Visit /pricing"] button')
  await page.waitForFunction(() => !document.querySelector('[data-goal="Visit /pricing"]'), { timeout: 10_000 })
  await page.select('#goal-form select', 'event')
  await page.type('#goal-form input', 'Signup')
  await page.click('#goal-form button[type=submit]')
  await page.waitForSelector('[data-goal="Signup"]', { timeout: 10_000 })
  facts.goals = (await listed(page, 'goals')).rows

  // A share link.
  await page.type('#link-form input', 'Public')
  await page.click('#link-form button[type=submit]')
  await page.waitForSelector('[data-link="Public"] input', { timeout: 10_000 })
  facts.share_url = await page.$eval('[data-link="Public"] input', (i) => i.value)
  // And one revoked at once.
  await page.type('#link-form input', 'Temporary')
  await page.click('#link-form button[type=submit]')
  await page.waitForSelector('[data-link="Temporary"] button.danger-link', { timeout: 10_000 })
  facts.revoked_url = await page.$eval('[data-link="Temporary"] input', (i) => i.value)
  await page.click('[data-link="Temporary"] button.danger-link')
  await page.waitForFunction(() => !document.querySelector('[data-link="Temporary"]'), { timeout: 10_000 })
  facts.links = await page.$$eval('[data-link]', (l) => l.map((x) => x.dataset.link))

  // Members: invite someone as a viewer.
  facts.members_before = await listed(page, 'members')
  await page.type('#invite-form input', invitee)
  await page.select('#invite-form select', 'viewer')
  await page.click('#invite-form button[type=submit]')
  await page.waitForFunction(
    () => document.querySelector('#invitation input') || document.querySelector('#invite-form + .error')?.textContent,
    { timeout: 10_000 },
  )
  facts.invitation_url = await page.$eval('#invitation input', (i) => i.value).catch(() => null)
  facts.invite_error = await text(page, '#invite-form + .error')
  facts.members_after = await listed(page, 'members')
  if (facts.invitation_url) {
    await (await page.$('[data-section=members]')).screenshot({ path: join(shots, 'settings-members-invited.png') })
    // Someone invited by mistake, removed again.
    await page.type('#invite-form input', `mistake.${invitee}`)
    await page.click('#invite-form button[type=submit]')
    await page.waitForSelector(`[data-member="mistake.${invitee}"]`, { timeout: 10_000 })
    await page.click(`[data-member="mistake.${invitee}"] button`)
    await page.waitForFunction((e) => !document.querySelector(`[data-member="${e}"]`), { timeout: 10_000 }, `mistake.${invitee}`)
    facts.members_after_remove = await page.$$eval('[data-member]', (m) => m.map((x) => x.dataset.member))
  }

  // API keys: one created, shown once.
  facts.keys_before = await listed(page, 'keys')
  await page.type('#key-form input', 'CI export')
  await page.select('#key-form select', 'stats')
  await page.click('#key-form button[type=submit]')
  await page.waitForFunction(() => document.querySelector('#new-key input') || document.querySelector('#key-form + .error')?.textContent, {
    timeout: 10_000,
  })
  facts.new_key = await page.$eval('#new-key input', (i) => i.value).catch(() => null)
  facts.key_error = await text(page, '#key-form + .error')
  if (facts.new_key) {
    await page.waitForSelector('[data-key="CI export"]', { timeout: 10_000 })
    facts.keys_after = (await listed(page, 'keys')).rows
    await page.click('[data-key="CI export"] button')
    await page.waitForFunction(() => !document.querySelector('[data-key="CI export"]'), { timeout: 10_000 })
  }

  // The audit log, reloaded with the page: what the owner just did.
  await page.reload()
  await ready(page, 'settings after a reload')
  facts.audit = (await listed(page, 'audit')).rows
  facts.received_after_reload = await page
    .waitForSelector('#received[data-received=true]', { timeout: 10_000 })
    .then(() => true)
    .catch(() => false)
  facts.delete_section = !!(await page.$('[data-section=delete]'))
  await page.mouse.move(0, 0)
  await page.screenshot({ path: join(shots, 'settings-desktop.png'), fullPage: true })
  await page.setViewport(PHONE) // a mobile viewport reloads the page
  await ready(page, 'settings at phone width')
  await listed(page, 'audit')
  facts.settings_phone_overflow = await overflow(page)
  await page.screenshot({ path: join(shots, 'settings-phone.png'), fullPage: true })
  await page.screenshot({ path: join(shots, 'settings-phone-top.png') })
  await page.setViewport(DESKTOP)
  await ready(page, 'settings at desktop width')

  // A site from the configuration file: settings read-only.
  await page.goto(`${base}/?site=${encodeURIComponent(configuredSite)}#settings`)
  await page.waitForSelector('[data-view=settings]', { timeout: 10_000 })
  await ready(page, 'settings of the configured site')
  facts.configured_note = await text(page, '[data-managed=configuration]')
  facts.configured_zone_disabled = await page.$eval('#timezone-form select', (s) => s.disabled)
  facts.configured_forms = await page.$$eval('#goal-form, #link-form, #delete-form', (f) => f.length)

  // A second site, refused under a taken name, then deleted with the typed confirmation.
  await page.goto(`${base}/?site=${encodeURIComponent(site)}#add-site`)
  await page.waitForSelector('[data-view=add-site]')
  await page.type('#add-site-form input', site)
  await page.click('#add-site-form button[type=submit]')
  await page.waitForFunction(() => document.querySelector('#add-site-form + .error').textContent, { timeout: 10_000 })
  facts.add_taken_error = await text(page, '#add-site-form + .error')
  await fill(page, '#add-site-form input', `doomed.${site}`)
  await page.click('#add-site-form button[type=submit]')
  await page.waitForSelector('[data-section=delete]', { timeout: 10_000 })
  await ready(page, 'settings of the site to rename')
  // Renamed in its settings: the page follows the new name, the snippet too.
  await fill(page, '#timezone-form #domain', `renamed.${site}`)
  await page.click('#timezone-form button[type=submit]')
  await page.waitForFunction((want) => document.querySelector('[data-view=settings] h1')?.textContent === `Settings for ${want}` && document.body.dataset.state === 'ready', { timeout: 20_000 }, `renamed.${site}`)
  await page.waitForSelector('#snippet', { timeout: 10_000 })
  facts.renamed_title = await text(page, '[data-view=settings] h1')
  facts.renamed_snippet = await text(page, '#snippet')
  facts.renamed_hint = await page.$$eval('[data-section=general] .hint', (h) => h.map((x) => x.textContent))
  await ready(page, 'settings of the site to delete')
  await page.type('#delete-form input', 'not the domain')
  await page.click('#delete-form button[type=submit]')
  await page.waitForFunction(() => document.querySelector('#delete-form + .error').textContent, { timeout: 10_000 })
  facts.delete_unconfirmed_error = await text(page, '#delete-form + .error')
  await fill(page, '#delete-form input', `renamed.${site}`)
  await page.click('#delete-form button[type=submit]')
  await page.waitForFunction(() => !location.hash && document.body.dataset.state === 'ready', { timeout: 20_000 })
  facts.sites_after_delete = await page.$$eval('#site option', (o) => o.map((x) => x.value))

  // Back to the stats: the new site's numbers come from the stats API.
  await page.goto(`${base}/?site=${encodeURIComponent(site)}&period=day`)
  await ready(page, 'the new site\'s stats')
  facts.stats_visitors = await page.$eval('[data-metric=visitors]', (t) => t.dataset.value)
  await page.screenshot({ path: join(shots, 'stats-desktop.png') })

  // The account page: change the password.
  await page.click('#nav-account')
  await page.waitForSelector('[data-view=account]')
  await page.setViewport(PHONE)
  await page.waitForSelector('[data-view=account]')
  await ready(page, 'account at phone width')
  facts.account_phone_overflow = await overflow(page)
  facts.account_email = await text(page, '#account-email')
  const inputs = await page.$$('#password-form input')
  await inputs[0].type(password)
  await inputs[1].type(newPassword)
  await inputs[2].type(newPassword)
  await page.click('#password-form button[type=submit]')
  await page.waitForFunction(() => document.getElementById('password-changed').textContent || document.querySelector('#password-form + .error').textContent, {
    timeout: 10_000,
  })
  facts.password_changed = await text(page, '#password-changed')
  facts.password_error = await text(page, '#password-form + .error')
  await page.screenshot({ path: join(shots, 'account-phone.png'), fullPage: true })

  // Signing out everywhere ends this session too: back to the sign-in form, cookie gone.
  await page.click('#signout-everywhere')
  await page.waitForSelector('body[data-state=login]', { timeout: 10_000 })
  facts.signed_out_everywhere_cookies = (await page.cookies()).length
  facts.signed_out_everywhere_url = page.url()
  await context.close()
}

/** The share link in a fresh context: the site's stats without signing in. */
async function shared(b) {
  const context = await b.createBrowserContext()
  const page = await open(context, 'share', PHONE)
  await page.goto(`${facts.share_url}&period=day`)
  await ready(page, 'the share link')
  facts.share_visitors = await page.$eval('[data-metric=visitors]', (t) => t.dataset.value)
  facts.share_sites = await page.$$eval('#site option', (o) => o.map((x) => x.value))
  facts.share_nav = await page.$$eval('#nav a', (a) => a.filter((x) => !x.hidden).map((x) => x.textContent))
  facts.share_cookies = (await page.cookies()).length
  await context.close()
}

/** The invitation page at both widths; accepted when the service made a link. */
async function invitation(b) {
  const context = await b.createBrowserContext()
  const page = await open(context, 'invitation')
  const url = facts.invitation_url || `${base}/?invitation=not-a-real-invitation`
  await page.goto(url)
  await page.waitForSelector('[data-view=invitation] [data-section=invitation]', { timeout: 10_000 })
  facts.invitation_title = await text(page, '[data-section=invitation] h2')
  facts.invitation_page_error = await text(page, '[data-section=invitation] .error')
  await page.screenshot({ path: join(shots, 'invitation-desktop.png'), fullPage: true })
  await page.setViewport(PHONE)
  await page.waitForSelector('[data-view=invitation] [data-section=invitation]', { timeout: 10_000 })
  facts.invitation_phone_overflow = await overflow(page)
  await page.screenshot({ path: join(shots, 'invitation-phone.png'), fullPage: true })
  await page.setViewport(DESKTOP)
  await page.waitForSelector('[data-view=invitation] [data-section=invitation]', { timeout: 10_000 })
  if (facts.invitation_url) {
    const inputs = await page.$$('#invitation-form input[type=password]')
    await inputs[0].type(inviteePassword)
    await inputs[1].type(inviteePassword)
    await page.click('#invitation-form button[type=submit]')
    await ready(page, 'after accepting the invitation')
    facts.invitee_who = await text(page, '#who')
    facts.invitee_sites = await page.$$eval('#site option', (o) => o.map((x) => x.value))
    facts.invitee_url = page.url()
    facts.invitee_settings_link_hidden = await page.$eval('#nav-settings', (a) => a.hidden)
  }
  await context.close()
}

/** A Glimpse without sites: the owner lands on Add site. */
async function firstRun(b) {
  const context = await b.createBrowserContext()
  const page = await open(context, 'first-run')
  await page.goto(`${base}/`)
  await page.waitForSelector('body[data-state=login]', { timeout: 10_000 })
  await page.type('#email', email)
  await page.type('#password', password)
  await page.click('#signin button[type=submit]')
  await page.waitForSelector('[data-view=add-site]', { timeout: 10_000 })
  await ready(page, 'the first run')
  facts.first_run_url = page.url()
  facts.first_run_focus = await page.evaluate(() => document.activeElement.textContent)
  facts.first_run_nav = await page.$$eval('#nav a', (a) => a.filter((x) => !x.hidden).map((x) => x.textContent))
  await page.screenshot({ path: join(shots, 'first-run-desktop.png') })
  await context.close()
}

let exit = 0
const watchdog = setTimeout(() => {
  log('timed out after 170 s')
  process.exit(3)
}, 170_000)
const dir = mkdtempSync(join(tmpdir(), 'glimpse-chromium-'))
let b
try {
  b = await launchChromium(dir, env.CHROMIUM, [`--host-resolver-rules=MAP ${site} 127.0.0.1`])
  if (env.FIRST_RUN) {
    await firstRun(b)
  } else {
    await owner(b)
    await shared(b)
    await invitation(b)
  }
  console.log(JSON.stringify(facts))
} catch (e) {
  log(e.stack || String(e))
  log('facts so far:', JSON.stringify(facts))
  exit = 1
} finally {
  if (b) await b.close().catch(() => {})
  server.close()
  rmSync(dir, { recursive: true, force: true })
  clearTimeout(watchdog)
}
process.exit(exit)
