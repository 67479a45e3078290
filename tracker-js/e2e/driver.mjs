// End-to-end driver for tests/tracker.rs: real headless Chromium (puppeteer-core over
// Debian's chromium) loads test pages served here, on 127.0.0.1, with the tracker from a
// running collector on another port (cross-origin, as in production). It checks what the
// browser can see (requests sent or not, navigations done) and prints one JSON line of facts;
// the Rust test then checks the rows in ClickHouse.
//
//   COLLECTOR=http://127.0.0.1:PORT CHROMIUM=/usr/bin/chromium node e2e/driver.mjs
import http from 'node:http'
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { check, launchChromium } from './chromium.mjs'

const collector = process.env.COLLECTOR
const chromium = process.env.CHROMIUM || '/usr/bin/chromium'
const eventPath = process.env.EVENT_PATH || '/api/event'
if (!collector) throw new Error('set COLLECTOR to the collector base URL')
const plausibleJs = readFileSync(new URL('../node_modules/@plausible-analytics/tracker/plausible.js', import.meta.url))

const log = (...a) => console.error('[e2e]', ...a)
const facts = {}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// --- Test pages ---------------------------------------------------------------------------
const served = [] // paths requested from the page server
function snippet({ variant = 'script.js', attrs = '', test = true, queue = '' } = {}) {
  return (
    (test ? '<script>window.__glimpse_test = true</script>' : '') +
    (queue
      ? '<script>window.glimpse = window.glimpse || function(){(window.glimpse.q=window.glimpse.q||[]).push(arguments)};' +
        queue +
        '</script>'
      : '') +
    `<script defer data-domain="example.com" data-allow-local ${attrs} src="${collector}/js/${variant}"></script>`
  )
}
function html(title, head, body = '') {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title>${head}</head><body><h1>${title}</h1>${body}</body></html>`
}
const pages = {
  '/from': () =>
    html('Source', '<meta name="referrer" content="unsafe-url">', `<a id="go" href="${site}/landing">to the landing page</a>`),
  '/landing': () => html('Landing', snippet()),
  '/spa': () => html('SPA', snippet()),
  '/events': () =>
    html(
      'Events',
      snippet({ queue: "glimpse('Queued Event', {props: {early: 'yes'}})" }),
      '<button id="goal" data-glimpse-event="Click Goal" data-glimpse-prop-position="hero"><span id="inner">Sign up</span></button>',
    ),
  '/links': () =>
    html(
      'Links',
      snippet({ variant: 'script.file-downloads.outbound-links.js' }),
      `<p><a id="dl" href="/files/report.pdf?token=abc">report</a></p>
       <p><a id="ctrl" href="${other}/outbound-target?tab=new">new tab</a></p>
       <p><a id="out" href="${other}/outbound-target">elsewhere</a></p>`,
    ),
  '/outbound-target': () => html('Outbound target', ''),
  '/read': () =>
    html('Read', snippet({ variant: 'script.engagement.js' }), '<div style="height:5000px">long text</div><p>end</p>'),
  '/no-flag': () => html('Automation without the test flag', snippet({ test: false })),
  '/private': () => html('Private', snippet()),
  '/private-server': () => html('Private, server decides', snippet({ attrs: 'data-dnt="server" data-gpc="server"' })),
  '/after-optout': () => html('After opting out', snippet()),
  '/plausible': () =>
    html(
      'Plausible',
      `<script type="module">
        import { init, track } from '/plausible.js'
        window.__plausible = true
        init({ domain: 'example.com', endpoint: '${collector}${eventPath}', captureOnLocalhost: true })
        track('Plausible Signup', { props: { plan: 'pro' } })
      </script>`,
    ),
}
let site, other // this server as 127.0.0.1 and as localhost: two origins
const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x')
  served.push(url.pathname)
  try {
    if (url.pathname === '/opt-out' || url.pathname === '/opt-in') return await proxy(req, res, url)
    if (url.pathname === '/plausible.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' })
      return res.end(plausibleJs)
    }
    if (url.pathname.startsWith('/files/')) {
      res.writeHead(200, { 'content-type': 'application/pdf', 'content-disposition': 'attachment; filename="report.pdf"' })
      return res.end('%PDF-1.4\n%%EOF\n')
    }
    const page = pages[url.pathname] || (url.pathname.startsWith('/spa') && pages['/spa'])
    if (!page) {
      res.writeHead(404)
      return res.end('not found')
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
    res.end(page())
  } catch (e) {
    res.writeHead(500)
    res.end(String(e))
  }
})

// First-party proxying, as the README's nginx example does: /opt-out on the site's origin.
async function proxy(req, res, url) {
  const chunks = []
  for await (const c of req) chunks.push(c)
  const upstream = await fetch(collector + url.pathname, {
    method: req.method,
    headers: {
      'content-type': req.headers['content-type'] || 'text/plain',
      cookie: req.headers.cookie || '',
      'user-agent': req.headers['user-agent'] || '',
    },
    body: req.method === 'POST' ? Buffer.concat(chunks) : undefined,
    redirect: 'manual',
  })
  const headers = { 'content-type': upstream.headers.get('content-type') || 'text/plain' }
  for (const h of ['location', 'set-cookie', 'cache-control']) {
    if (upstream.headers.get(h)) headers[h] = upstream.headers.get(h)
  }
  res.writeHead(upstream.status, headers)
  res.end(Buffer.from(await upstream.arrayBuffer()))
}

// --- Browser ------------------------------------------------------------------------------
const dirs = []
async function browser({ dnt = false } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'glimpse-chromium-'))
  dirs.push(dir)
  if (dnt) {
    // The browser's own "Send a Do Not Track request" setting: navigator.doNotTrack and DNT: 1.
    mkdirSync(join(dir, 'Default'))
    writeFileSync(join(dir, 'Default', 'Preferences'), JSON.stringify({ enable_do_not_track: true }))
  }
  return launchChromium(dir, chromium)
}

/** A new page whose requests to the collector's event path are counted. */
async function open(b) {
  const page = await b.newPage()
  page.beacons = []
  page.on('request', (r) => {
    if (r.url().startsWith(collector + eventPath)) page.beacons.push(r)
  })
  return page
}

async function waitFor(what, predicate, ms = 10_000) {
  const deadline = Date.now() + ms
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(50)
  }
}
const beacons = (page, n, what) => waitFor(`${n} beacon(s) ${what}`, () => page.beacons.length >= n)
/** Lets anything that would be sent go out, then checks that nothing was. */
async function silent(page, what) {
  await sleep(1500)
  check(page.beacons.length === 0, `${what}: ${page.beacons.length} beacon(s) sent, expected none`)
}

async function scenarios(b) {
  // One page load, reached from another site (localhost), with its referrer.
  let page = await open(b)
  await page.goto(`${other}/from`)
  await Promise.all([page.waitForNavigation(), page.click('#go')])
  await beacons(page, 1, 'for /landing')
  facts.inner_width = await page.evaluate(() => innerWidth)
  facts.referrer = await page.evaluate(() => document.referrer)
  await sleep(300)
  check(page.beacons.length === 1, `/landing sent ${page.beacons.length} beacons`)
  await page.close()

  // SPA: three pushState navigations, same-path and query-only changes, one popstate.
  page = await open(b)
  await page.goto(`${site}/spa`)
  await beacons(page, 1, 'for /spa')
  for (const path of ['/spa/a', '/spa/b', '/spa/c']) {
    await page.evaluate((p) => history.pushState({}, '', p), path)
  }
  await page.evaluate(() => history.replaceState({}, '', '/spa/c'))
  await page.evaluate(() => history.pushState({}, '', '/spa/c?tab=1'))
  await page.evaluate(() => history.back()) // to /spa/c: same path
  await waitFor('back to /spa/c', async () => (await page.evaluate(() => location.search)) === '')
  await page.evaluate(() => history.back()) // to /spa/b
  await beacons(page, 5, 'for the SPA')
  await sleep(500)
  facts.spa_beacons = page.beacons.length
  await page.close()

  // Custom events: queued before load, from the API, and a click goal.
  page = await open(b)
  await page.goto(`${site}/events`)
  await beacons(page, 2, 'for /events')
  await page.evaluate(() => window.glimpse('Signup', { props: { plan: 'pro' } }))
  await page.click('#inner')
  await beacons(page, 4, 'for the custom events')
  await page.close()

  // Outbound link and file download clicks: recorded, and the browser still goes there.
  page = await open(b)
  await page.goto(`${site}/links`)
  await beacons(page, 1, 'for /links')
  await page.click('#dl')
  await beacons(page, 2, 'for the download')
  await waitFor('the download request', () => served.includes('/files/report.pdf'))
  const newTab = b.waitForTarget((t) => t.url() === `${other}/outbound-target?tab=new`, { timeout: 10_000 })
  await page.keyboard.down('Control')
  await page.click('#ctrl')
  await page.keyboard.up('Control')
  await newTab
  await beacons(page, 3, 'for the ctrl-click')
  await Promise.all([page.waitForNavigation(), page.click('#out')])
  facts.outbound_landed_on = page.url()
  check(page.url() === `${other}/outbound-target`, `the outbound click went to ${page.url()}`)
  await page.close()

  // Engagement: visible time and scroll depth, sent once when the page is hidden.
  page = await open(b)
  await page.goto(`${site}/read`)
  await beacons(page, 1, 'for /read')
  await sleep(1200)
  await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight / 2 - innerHeight))
  await sleep(300)
  // Another tab in front hides this one (visibilitychange).
  const cover = await b.newPage()
  await cover.bringToFront()
  await waitFor('the page to be hidden', async () => page.evaluate(() => document.hidden))
  await beacons(page, 2, 'for the engagement')
  await page.bringToFront()
  await page.goto('about:blank') // pagehide: already sent, nothing more
  await sleep(300)
  facts.read_beacons = page.beacons.length
  await cover.close()
  await page.close()

  // Automation without window.__glimpse_test: nothing.
  page = await open(b)
  await page.goto(`${site}/no-flag`)
  await silent(page, 'navigator.webdriver without __glimpse_test')
  await page.close()

  // Global Privacy Control (Chromium has no switch for it: the page sees it, requests carry
  // Sec-GPC: 1). The tracker sends nothing; with data-gpc="server" it sends and the
  // collector drops it.
  page = await open(b)
  await page.evaluateOnNewDocument(() =>
    Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true }),
  )
  await page.setExtraHTTPHeaders({ 'Sec-GPC': '1' })
  await page.goto(`${site}/private?gpc`)
  await silent(page, 'globalPrivacyControl')
  await page.goto(`${site}/private-server?gpc`)
  await beacons(page, 1, 'with data-gpc="server"')
  const gpcHeader = page.beacons[0].headers()['sec-gpc']
  check(gpcHeader === '1', `the beacon's Sec-GPC header is ${gpcHeader}`)
  await page.close()

  // Opt-out page, proxied on the site's origin: the button sets the cookie and the
  // localStorage switch; afterwards the tracker sends nothing.
  page = await open(b)
  await page.goto(`${site}/opt-out`)
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')])
  facts.opt_out_status = await page.$eval('#status', (e) => e.textContent)
  facts.opt_out_storage = await page.evaluate(() => localStorage.glimpse_ignore)
  check(facts.opt_out_storage === 'true', `localStorage.glimpse_ignore is ${facts.opt_out_storage}`)
  await page.goto(`${site}/after-optout`)
  await silent(page, 'after the opt-out page')
  await page.evaluate(() => localStorage.removeItem('glimpse_ignore'))
  await page.close()

  // Plausible's own tracker (npm @plausible-analytics/tracker), pointed at Glimpse.
  page = await open(b)
  await page.goto(`${site}/plausible`)
  await beacons(page, 2, "from Plausible's tracker")
  facts.plausible_statuses = await Promise.all(
    page.beacons.map((r) => waitFor('a response', () => r.response()).then(() => r.response().status())),
  )
  await page.close()
}

async function doNotTrack(b) {
  // The browser's Do Not Track setting: the tracker sends nothing; with data-dnt="server" it
  // sends, with DNT: 1, and the collector drops it.
  const page = await open(b)
  await page.goto(`${site}/private?dnt`)
  facts.navigator_dnt = await page.evaluate(() => navigator.doNotTrack)
  check(facts.navigator_dnt === '1', `navigator.doNotTrack is ${facts.navigator_dnt}`)
  await silent(page, 'Do Not Track')
  await page.goto(`${site}/private-server?dnt`)
  await beacons(page, 1, 'with data-dnt="server"')
  const dnt = page.beacons[0].headers()['dnt']
  check(dnt === '1', `the beacon's DNT header is ${dnt}`)
  await waitFor('its answer', () => page.beacons[0].response())
  facts.dnt_server_status = page.beacons[0].response().status()
  await page.close()
}

let exit = 0
const watchdog = setTimeout(() => {
  log('timed out after 150 s')
  process.exit(3)
}, 150_000)
await new Promise((r) => server.listen(0, '127.0.0.1', r))
const port = server.address().port
site = `http://127.0.0.1:${port}`
other = `http://localhost:${port}`
facts.site = site
facts.other = other
const opened = []
try {
  const b = await browser()
  opened.push(b)
  facts.chromium = await b.version()
  await scenarios(b)
  const d = await browser({ dnt: true })
  opened.push(d)
  await doNotTrack(d)
  console.log(JSON.stringify(facts))
} catch (e) {
  log(e.stack || String(e))
  exit = 1
} finally {
  for (const b of opened) await b.close().catch(() => {})
  server.close()
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  clearTimeout(watchdog)
}
process.exit(exit)
