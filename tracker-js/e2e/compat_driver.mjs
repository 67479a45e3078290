// End-to-end driver for tests/compat_trackers.rs: real headless Chromium (puppeteer-core over
// Debian's chromium, launched as e2e/driver.mjs does) loads pages served here, on 127.0.0.1,
// that embed the REAL, unmodified Umami and Matomo trackers (read from ../shared/trackers,
// paths given by the test) pointed at a running Glimpse collector on another port, and a
// <noscript> pixel page opened with JavaScript disabled. It checks what the browser can see
// and prints one JSON line of facts; the Rust test checks the rows in ClickHouse.
//
//   COLLECTOR=http://127.0.0.1:PORT CHROMIUM=/usr/bin/chromium UMAMI_JS=… MATOMO_JS=… \
//   UMAMI_WEBSITE=uuid MATOMO_SITE=1 PIXEL_SITE=domain node e2e/compat_driver.mjs
import http from 'node:http'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { check, launchChromium } from './chromium.mjs'

const env = (name) => {
  if (!process.env[name]) throw new Error(`set ${name}`)
  return process.env[name]
}
const collector = env('COLLECTOR')
const chromium = process.env.CHROMIUM || '/usr/bin/chromium'
const umamiJs = readFileSync(env('UMAMI_JS'))
const matomoJs = readFileSync(env('MATOMO_JS'))
const umamiWebsite = env('UMAMI_WEBSITE')
const matomoSite = env('MATOMO_SITE')
const pixelSite = env('PIXEL_SITE')
// The same desktop browser as e2e/driver.mjs: the collector drops HeadlessChrome as a bot.

const log = (...a) => console.error('[compat-e2e]', ...a)
const facts = {}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// --- Test pages ---------------------------------------------------------------------------
const served = []
function html(title, head, body = '') {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title>${head}</head><body><h1>${title}</h1>${body}</body></html>`
}
let site, other
const pages = {
  // Umami's standard embed, the script served by "the site", data-host-url at Glimpse.
  '/umami': () =>
    html(
      'Umami',
      `<script defer src="${site}/umami/script.js" data-website-id="${umamiWebsite}" data-host-url="${collector}"></script>`,
      '<button id="goal" data-umami-event="Click Goal" data-umami-event-position="hero"><span id="inner">Sign up</span></button>',
    ),
  // Matomo's standard snippet, matomo.js served by "the site", the tracker URL at Glimpse.
  '/matomo': () =>
    html(
      'Matomo',
      `<script>var _paq = window._paq = window._paq || []; _paq.push(['trackPageView']); _paq.push(['enableLinkTracking']);
      (function(){ var u="${collector}/"; _paq.push(['setTrackerUrl', u+'matomo.php']); _paq.push(['setSiteId', '${matomoSite}']);
      var d=document, g=d.createElement('script'), s=d.getElementsByTagName('script')[0]; g.async=true; g.src='${site}/matomo.js'; s.parentNode.insertBefore(g,s); })();</script>`,
      `<p><a id="dl" href="/files/report.pdf?token=abc">report</a></p>
       <p><a id="out" href="${other}/outbound-target">elsewhere</a></p>`,
    ),
  '/outbound-target': () => html('Outbound target', ''),
  // No JavaScript: the pixel, once with the page from the Referer, once with u=.
  '/pixel': () =>
    html(
      'Pixel',
      "<script>document.title = 'JavaScript ran'</script>",
      `<noscript><img id="p1" src="${collector}/pixel.gif?d=${pixelSite}" referrerpolicy="no-referrer-when-downgrade" width="1" height="1" alt=""></noscript>
       <noscript><img id="p2" src="${collector}/pixel.gif?d=${pixelSite}&amp;u=${encodeURIComponent(site + '/newsletter/2026-11?utm_source=mail')}" width="1" height="1" alt=""></noscript>`,
    ),
}
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x')
  served.push(url.pathname)
  if (url.pathname === '/umami/script.js' || url.pathname === '/matomo.js') {
    res.writeHead(200, { 'content-type': 'text/javascript' })
    return res.end(url.pathname === '/matomo.js' ? matomoJs : umamiJs)
  }
  if (url.pathname.startsWith('/files/')) {
    res.writeHead(200, { 'content-type': 'application/pdf', 'content-disposition': 'attachment; filename="report.pdf"' })
    return res.end('%PDF-1.4\n%%EOF\n')
  }
  const page = Object.entries(pages).find(([p]) => url.pathname === p || url.pathname.startsWith(p + '/'))
  if (!page) {
    res.writeHead(404)
    return res.end('not found')
  }
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
  res.end(page[1]())
})

// --- Browser (as e2e/driver.mjs) -------------------------------------------------------------
const dirs = []
async function browser() {
  const dir = mkdtempSync(join(tmpdir(), 'glimpse-chromium-'))
  dirs.push(dir)
  return launchChromium(dir, chromium)
}

/** A new page whose requests to `path` on the collector (not preflights) are kept. */
async function open(b, path) {
  const page = await b.newPage()
  // A desktop's screen: headless Chromium reports 800×600, which is a tablet's width, and
  // Umami and Matomo send the screen's size (not the window's, as Glimpse's tracker does).
  const cdp = await page.createCDPSession()
  await cdp.send('Emulation.setDeviceMetricsOverride', {
    width: 0,
    height: 0,
    deviceScaleFactor: 0,
    mobile: false,
    screenWidth: 1920,
    screenHeight: 1080,
  })
  page.sent = []
  page.on('request', (r) => {
    if (r.url().startsWith(collector + path) && r.method() !== 'OPTIONS') page.sent.push(r)
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
const requests = (page, n, what) => waitFor(`${n} request(s) ${what}`, () => page.sent.length >= n)
const statuses = (page) =>
  Promise.all(page.sent.map((r) => waitFor('a response', () => r.response()).then(() => r.response().status())))

async function umami(b) {
  const page = await open(b, '/api/send')
  await page.goto(`${site}/umami`)
  await requests(page, 1, 'for the Umami pageview')
  // SPA: two pushState navigations, each sent 300 ms later.
  await page.evaluate(() => history.pushState({}, '', '/umami/a'))
  await requests(page, 2, 'for /umami/a')
  await page.evaluate(() => history.pushState({}, '', '/umami/b'))
  await requests(page, 3, 'for /umami/b')
  // Custom events: the JavaScript API and a data-umami-event click.
  await page.evaluate(() => window.umami.track('Signup', { plan: 'pro', seats: 3 }))
  await page.click('#inner')
  await requests(page, 5, 'for the Umami custom events')
  // identify: answered, never stored.
  await page.evaluate(() => window.umami.identify('user-42', { email: 'a@example.com' }))
  await requests(page, 6, 'for identify')
  facts.umami_statuses = await statuses(page)
  facts.umami_bodies = page.sent.map((r) => JSON.parse(r.postData()))
  // What the tracker read from the answers: no session cache token, not disabled.
  facts.umami_session = await page.evaluate(() => window.umami.getSession && window.umami.getSession())
  await sleep(300)
  check(page.sent.length === 6, `Umami sent ${page.sent.length} requests`)
  await page.close()
}

async function matomo(b) {
  const page = await open(b, '/matomo.php')
  await page.goto(`${site}/matomo`)
  await requests(page, 1, 'for the Matomo pageview')
  await sleep(1200) // Matomo delays requests in the 800 ms after its first one.
  // SPA: Matomo's documented single-page-app calls.
  for (const path of ['/matomo/a', '/matomo/b']) {
    await page.evaluate((p) => {
      history.pushState({}, '', p)
      window._paq.push(['setCustomUrl', p])
      window._paq.push(['setDocumentTitle', 'Step ' + p])
      window._paq.push(['trackPageView'])
    }, path)
  }
  await page.evaluate(() => window._paq.push(['trackEvent', 'Video', 'Play', 'Intro', 12]))
  await requests(page, 4, 'for the Matomo SPA pageviews and the event')
  // Back to /matomo for the link clicks, so that they come from that page.
  await page.evaluate(() => window._paq.push(['setCustomUrl', location.origin + '/matomo']))
  await page.click('#dl')
  await requests(page, 5, 'for the download')
  // The answers, before the outbound click navigates away (its beacon outlives the page).
  facts.matomo_statuses = await statuses(page)
  await Promise.all([page.waitForNavigation(), page.click('#out')])
  await requests(page, 6, 'for the outbound link')
  facts.matomo_landed_on = page.url()
  facts.matomo_methods = page.sent.map((r) => r.method())
  await page.close()
}

async function pixel(b) {
  const page = await open(b, '/pixel.gif')
  await page.setJavaScriptEnabled(false)
  await page.goto(`${site}/pixel`)
  await requests(page, 2, 'for the pixels')
  facts.pixel_statuses = await statuses(page)
  facts.pixel_content_types = page.sent.map((r) => r.response().headers()['content-type'])
  facts.pixel_referer = page.sent.map((r) => r.headers()['referer'] || null)
  facts.pixel_title = await page.title()
  check(facts.pixel_title === 'Pixel', `JavaScript ran on the pixel page (title ${facts.pixel_title})`)
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
  await umami(b)
  await matomo(b)
  await pixel(b)
  await sleep(500)
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
