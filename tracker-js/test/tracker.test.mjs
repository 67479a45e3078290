// Unit tests of the built tracker (dist/), run in a fake browser: a vm context with just the
// window, document, location, history, navigator, fetch and sendBeacon the tracker touches.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, readdirSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import vm from 'node:vm'

const dist = new URL('../dist/', import.meta.url)
const source = (variant) => readFileSync(new URL(variant, dist), 'utf8')
const ALL = 'script.engagement.file-downloads.outbound-links.js'

function listeners() {
  const map = {}
  return {
    addEventListener: (type, fn) => (map[type] ||= []).push(fn),
    fire: (type, event = {}) => (map[type] || []).forEach((fn) => fn({ type, ...event })),
  }
}

/** Loads `variant` into a fake page and returns the page, with every request in `sent`. */
function load({
  variant = 'script.js',
  href = 'https://example.com/start',
  attrs = {},
  navigator = {},
  storage = {},
  referrer = '',
  before,
} = {}) {
  const sent = []
  const clock = { now: 1_000_000 }
  const location = {}
  const setUrl = (url) => {
    const u = new URL(url, location.href)
    for (const k of ['href', 'pathname', 'search', 'hash', 'hostname', 'host', 'protocol']) location[k] = u[k]
  }
  setUrl(href)
  const scriptAttrs = { 'data-domain': 'example.com', ...attrs }
  const doc = {
    ...listeners(),
    currentScript: {
      src: 'https://collector.example/js/script.js',
      getAttribute: (name) => (name in scriptAttrs ? scriptAttrs[name] : null),
    },
    referrer,
    hidden: false,
    documentElement: { scrollHeight: 3000 },
    body: { scrollHeight: 3000 },
  }
  const history = {
    pushState: (_s, _t, url) => setUrl(url),
    replaceState: (_s, _t, url) => setUrl(url),
  }
  const win = {
    ...listeners(),
    location,
    history,
    document: doc,
    navigator: {
      sendBeacon: (url, body) => sent.push({ url, body: JSON.parse(body), beacon: true }),
      ...navigator,
    },
    innerWidth: 1280,
    innerHeight: 1000,
    scrollY: 0,
    URL,
    Date: { now: () => clock.now },
    fetch: (url, init) => {
      sent.push({ url, body: JSON.parse(init.body), method: init.method, keepalive: init.keepalive })
      return Promise.resolve({ status: 202 })
    },
  }
  if (storage === 'throws') {
    Object.defineProperty(win, 'localStorage', {
      get() {
        throw new Error('SecurityError')
      },
    })
  } else {
    win.localStorage = storage
  }
  win.window = win
  vm.createContext(win)
  if (before) vm.runInContext(before, win)
  vm.runInContext(source(variant), win)
  return {
    win,
    doc,
    sent,
    clock,
    names: () => sent.map((s) => s.body.n),
    push: (url) => win.history.pushState({}, '', url),
    back: (url) => {
      setUrl(url)
      win.fire('popstate')
    },
    click: (target, event = {}) => doc.fire(event.type || 'click', { target, button: 0, ...event }),
    hide: () => {
      doc.hidden = true
      doc.fire('visibilitychange')
    },
    show: () => {
      doc.hidden = false
      doc.fire('visibilitychange')
    },
  }
}

/** A fake element: tag, attributes, parent. `href` is resolved like a browser's. */
function element(tag, attrs = {}, parent = null) {
  const el = {
    tagName: tag,
    parentNode: parent,
    attributes: Object.entries(attrs).map(([name, value]) => ({ name, value })),
    getAttribute: (name) => (name in attrs ? attrs[name] : null),
  }
  if (attrs.href) {
    const u = new URL(attrs.href, 'https://example.com/start')
    Object.assign(el, { href: u.href, host: u.host, protocol: u.protocol, pathname: u.pathname })
  }
  return el
}

test('a page load sends one pageview with URL, domain, referrer and width, by fetch keepalive', () => {
  const page = load({ href: 'https://example.com/pricing?x=1', referrer: 'https://news.ycombinator.com/' })
  assert.equal(page.sent.length, 1)
  const [s] = page.sent
  assert.equal(s.url, 'https://collector.example/api/event')
  assert.equal(s.method, 'POST')
  assert.equal(s.keepalive, true)
  assert.deepEqual(s.body, {
    n: 'pageview',
    u: 'https://example.com/pricing?x=1',
    d: 'example.com',
    r: 'https://news.ycombinator.com/',
    w: 1280,
    h: null,
  })
})

test('data-api overrides the beacon URL', () => {
  const page = load({ attrs: { 'data-api': 'https://example.com/stats/e' } })
  assert.equal(page.sent[0].url, 'https://example.com/stats/e')
})

test('SPA: one pageview per real path change, none for same path or query-only', () => {
  const page = load({ href: 'https://example.com/app' })
  page.push('/app/a')
  page.push('/app/a') // same path
  page.push('/app/a?tab=2') // query only
  page.win.history.replaceState({}, '', '/app/a?tab=3') // query only, replace
  page.push('/app/b')
  page.win.history.replaceState({}, '', '/app/c')
  page.back('/app/b')
  page.win.fire('popstate') // popstate without a path change
  assert.deepEqual(
    page.sent.map((s) => new URL(s.body.u).pathname),
    ['/app', '/app/a', '/app/b', '/app/c', '/app/b'],
  )
  assert.ok(page.names().every((n) => n === 'pageview'))
})

test('data-search makes query changes count', () => {
  const page = load({ href: 'https://example.com/s?q=1', attrs: { 'data-search': '' } })
  page.push('/s?q=2')
  page.push('/s?q=2')
  assert.equal(page.sent.length, 2)
})

test('data-hash: hash routing sends h=1 and one pageview per fragment', () => {
  const page = load({ href: 'https://example.com/#/home', attrs: { 'data-hash': '' } })
  page.win.location.hash = '#/about'
  page.win.location.href = 'https://example.com/#/about'
  page.win.fire('hashchange')
  page.win.fire('hashchange')
  assert.equal(page.sent.length, 2)
  assert.equal(page.sent[1].body.h, true)
  assert.equal(page.sent[1].body.u, 'https://example.com/#/about')
})

test('without data-hash, fragment changes send nothing', () => {
  const page = load({ href: 'https://example.com/#a' })
  page.push('#b')
  assert.equal(page.sent.length, 1)
})

test('custom events: queued calls before load, props, callback', async () => {
  const page = load({
    before:
      "window.glimpse = window.glimpse || function(){(window.glimpse.q=window.glimpse.q||[]).push(arguments)};" +
      "glimpse('Early', {props: {n: 1}})",
  })
  let called = 0
  page.win.glimpse('Signup', { props: { plan: 'pro' }, callback: () => called++ })
  assert.deepEqual(page.names(), ['Early', 'pageview', 'Signup'])
  assert.deepEqual(page.sent[0].body.p, { n: 1 })
  assert.deepEqual(page.sent[2].body.p, { plan: 'pro' })
  await new Promise((r) => setTimeout(r, 0))
  assert.equal(called, 1)
})

test('the callback is called even when nothing is sent', () => {
  const page = load({ storage: { glimpse_ignore: 'true' } })
  let called = 0
  page.win.glimpse('X', { callback: () => called++ })
  assert.equal(called, 1)
  assert.equal(page.sent.length, 0)
})

test('click goals: data-glimpse-event with data-glimpse-prop-* on the element or an ancestor', () => {
  const page = load()
  const button = element('BUTTON', { 'data-glimpse-event': 'Signup', 'data-glimpse-prop-plan': 'pro', class: 'x' })
  page.click(element('SPAN', {}, button))
  page.click(element('DIV'))
  assert.deepEqual(page.names(), ['pageview', 'Signup'])
  assert.deepEqual(page.sent[1].body.p, { plan: 'pro' })
})

test('outbound links: other hosts only, left and middle clicks, never right clicks', () => {
  const page = load({ variant: 'script.outbound-links.js' })
  page.click(element('A', { href: 'https://other.org/x?y=1' }))
  page.click(element('A', { href: '/internal' }))
  page.click(element('A', { href: 'https://other.org/mid' }), { type: 'auxclick', button: 1 })
  page.click(element('A', { href: 'https://other.org/right' }), { type: 'auxclick', button: 2 })
  page.click(element('A', { href: 'mailto:a@b.c' }))
  assert.deepEqual(page.names(), ['pageview', 'Outbound Link: Click', 'Outbound Link: Click'])
  assert.deepEqual(page.sent[1].body.p, { url: 'https://other.org/x?y=1' })
  assert.deepEqual(page.sent[2].body.p, { url: 'https://other.org/mid' })
})

test('the core script sends no outbound or download events', () => {
  const page = load()
  page.click(element('A', { href: 'https://other.org/x' }))
  page.click(element('A', { href: '/files/a.pdf' }))
  assert.deepEqual(page.names(), ['pageview'])
})

test('file downloads: default and configured extensions, query dropped', () => {
  const page = load({ variant: 'script.file-downloads.js' })
  page.click(element('A', { href: '/files/report.PDF?token=secret' }))
  page.click(element('A', { href: '/files/page.html' }))
  page.click(element('A', { href: 'https://other.org/x' }))
  assert.deepEqual(page.names(), ['pageview', 'File Download'])
  assert.deepEqual(page.sent[1].body.p, { url: 'https://example.com/files/report.PDF' })

  const custom = load({ variant: 'script.file-downloads.js', attrs: { 'data-file-types': 'pdf, epub' } })
  custom.click(element('A', { href: '/b.epub' }))
  custom.click(element('A', { href: '/b.zip' }))
  assert.deepEqual(custom.names(), ['pageview', 'File Download'])
})

test('engagement: visible time and deepest scroll, one event per page, by sendBeacon', () => {
  const page = load({ variant: 'script.engagement.js', href: 'https://example.com/read' })
  page.clock.now += 4000
  page.win.scrollY = 1000
  page.win.fire('scroll')
  page.win.scrollY = 200
  page.win.fire('scroll')
  page.hide()
  page.clock.now += 60_000 // hidden time does not count
  page.show()
  page.clock.now += 1000
  page.win.fire('pagehide')
  const engagements = page.sent.filter((s) => s.body.n === 'engagement')
  assert.equal(engagements.length, 1)
  const [e] = engagements
  assert.equal(e.beacon, true)
  assert.equal(e.body.u, 'https://example.com/read')
  assert.equal(e.body.e, 4000)
  assert.equal(e.body.sd, 67) // (1000 + 1000) / 3000
})

test('engagement: an SPA navigation ends the previous page', () => {
  const page = load({ variant: 'script.engagement.js', href: 'https://example.com/one' })
  page.clock.now += 1500
  page.push('/two')
  page.clock.now += 2500
  page.win.fire('pagehide')
  const got = page.sent.map((s) => [s.body.n, new URL(s.body.u).pathname, s.body.e])
  assert.deepEqual(got, [
    ['pageview', '/one', undefined],
    ['engagement', '/one', 1500],
    ['pageview', '/two', undefined],
    ['engagement', '/two', 2500],
  ])
})

test('privacy: DNT, GPC, opt-out, local pages and automation send nothing', () => {
  const quiet = [
    { navigator: { doNotTrack: '1' } },
    { navigator: { globalPrivacyControl: true } },
    { storage: { glimpse_ignore: 'true' } },
    { href: 'http://localhost:3000/' },
    { href: 'http://127.0.0.1:8080/' },
    { href: 'http://[::1]/' },
    { href: 'file:///home/me/page.html' },
    { navigator: { webdriver: true } },
    { attrs: { 'data-exclude': '/admin*, /drafts/*' }, href: 'https://example.com/admin/users' },
    { attrs: { 'data-exclude': '/admin*,/drafts/*' }, href: 'https://example.com/drafts/x' },
  ]
  for (const options of quiet) {
    const page = load(options)
    page.win.glimpse('Custom')
    assert.equal(page.sent.length, 0, JSON.stringify(options))
  }
  const loud = [
    { navigator: { doNotTrack: '1' }, attrs: { 'data-dnt': 'server' } },
    { navigator: { doNotTrack: '0', globalPrivacyControl: false } },
    { navigator: { globalPrivacyControl: true }, attrs: { 'data-gpc': 'server' } },
    { storage: { glimpse_ignore: 'false' } },
    { storage: 'throws' },
    { href: 'http://localhost:3000/', attrs: { 'data-allow-local': '' } },
    { href: 'https://localhost.example.com/' },
    { navigator: { webdriver: true }, before: 'window.__glimpse_test = true' },
    { attrs: { 'data-exclude': '/admin/*' }, href: 'https://example.com/administrators' },
    { attrs: { 'data-exclude': '/a.b' }, href: 'https://example.com/axb' },
  ]
  for (const options of loud) {
    const page = load(options)
    assert.equal(page.sent.length, 1, JSON.stringify(options))
  }
})

test('an opt-out in another tab takes effect at once', () => {
  const storage = {}
  const page = load({ storage })
  storage.glimpse_ignore = 'true'
  page.push('/next')
  assert.equal(page.sent.length, 1)
})

test('no cookies, no storage writes', () => {
  const storage = {}
  const page = load({ variant: ALL, storage })
  page.push('/x')
  assert.deepEqual(storage, {})
  assert.equal(source(ALL).includes('cookie'), false)
})

test('every variant holds the default event path once (the collector substitutes it)', () => {
  for (const file of readdirSync(dist)) {
    assert.equal(source(file).split('"/api/event"').length, 2, file)
  }
})

test('size budget: the default script is at most 1,024 bytes gzipped', () => {
  for (const file of readdirSync(dist).sort()) {
    const bytes = readFileSync(new URL(file, dist))
    console.log(`size ${file}: ${bytes.length} B, gzip ${gzipSync(bytes, { level: 9 }).length} B`)
  }
  const gz = gzipSync(readFileSync(new URL('script.js', dist)), { level: 9 }).length
  assert.ok(gz <= 1024, `script.js is ${gz} B gzipped`)
})
