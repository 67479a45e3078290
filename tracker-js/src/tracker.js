// Glimpse's tracker: the one script websites load. Cookieless; it stores nothing about the
// visitor. It speaks Plausible's event protocol (README "Beacon endpoint").
//
// OUTBOUND, DOWNLOADS and ENGAGEMENT are compile-time flags (build.mjs): each variant carries
// only the code it needs, so the default script stays small.
/* global OUTBOUND, DOWNLOADS, ENGAGEMENT */
((w, d) => {
  var loc = w.location
  var nav = w.navigator
  var me = d.currentScript
  var attr = (name) => me.getAttribute('data-' + name)
  var domain = attr('domain')
  // The collector serves this file with its configured event path in place of "/api/event".
  var api = attr('api') || new URL('/api/event', me.src).href
  var hashMode = attr('hash') != null
  var withSearch = attr('search') != null
  // data-exclude="/admin*, /drafts/*": * matches anything, as in the server's exclude_paths.
  var exclude = attr('exclude')
  exclude &&= RegExp(
    '^(' +
      exclude
        .replace(/\s/g, '')
        .replace(/[^\w/*,-]/g, '\\$&')
        .replace(/\*/g, '.*')
        .replace(/,/g, '|') +
      ')$',
  )
  var current // the path of the page whose pageview was sent last
  // Engagement (only the ENGAGEMENT variants use these): when the page became visible (0
  // while hidden), visible milliseconds before that, the deepest scroll in percent, and the
  // page the engagement is about (unset once sent).
  var shownAt, engaged, depth, engagedUrl, engagement, scrolled

  // Whether this visitor or page must not be counted. Asked before every send: an opt-out on
  // another tab takes effect at once.
  var silent = () => {
    try {
      if (localStorage.glimpse_ignore == 'true') return 1
    } catch (e) {}
    return (
      // file: pages have no host name.
      (/^(localhost|127(\.\d+){3}|\[::1\]|)$/.test(loc.hostname) && attr('allow-local') == null) ||
      (nav.webdriver && !w.__glimpse_test) ||
      (attr('dnt') != 'server' && nav.doNotTrack == '1') ||
      (attr('gpc') != 'server' && nav.globalPrivacyControl === true) ||
      (exclude && exclude.test(loc.pathname))
    )
  }

  // Sends one event. `hiding`: the page is going away, so sendBeacon, which survives it.
  var send = (name, options, hiding, extra) => {
    options = options || {}
    var done = options.callback
    if (silent()) return done && done()
    var body = JSON.stringify(
      Object.assign(
        {
          n: name,
          u: loc.href,
          d: domain,
          r: d.referrer,
          w: w.innerWidth,
          h: hashMode || null,
          p: options.props,
        },
        extra,
      ),
    )
    if (hiding && nav.sendBeacon) return nav.sendBeacon(api, body)
    // A string body is text/plain: no CORS preflight. keepalive: the request outlives a
    // navigation, so links are never held back.
    fetch(api, { method: 'POST', body, keepalive: true }).then(done, done)
  }

  if (ENGAGEMENT) {
    engagement = () => {
      if (engagedUrl) {
        var ms = engaged + (shownAt && Date.now() - shownAt)
        send('engagement', 0, 1, { u: engagedUrl, sd: depth, e: ms })
        engagedUrl = 0
      }
    }
    scrolled = () => {
      var el = d.documentElement
      var height = Math.max(el.scrollHeight, d.body ? d.body.scrollHeight : 0)
      var seen = Math.round(((w.scrollY + w.innerHeight) / height) * 100)
      if (seen > depth) depth = seen > 100 ? 100 : seen
    }
    w.addEventListener('scroll', scrolled, { passive: true })
    d.addEventListener('visibilitychange', () => {
      if (d.hidden) engagement(), (engaged += shownAt && Date.now() - shownAt), (shownAt = 0)
      else shownAt = Date.now()
    })
    w.addEventListener('pagehide', engagement)
  }

  // One pageview per real path change: pushState to the same path, or a query-only change
  // (unless data-search), sends nothing.
  var page = () => {
    var path = loc.pathname + (withSearch ? loc.search : '') + (hashMode ? loc.hash : '')
    if (path != current) {
      current = path
      if (ENGAGEMENT) {
        engagement()
        depth = 0
        engaged = 0
        shownAt = d.hidden ? 0 : Date.now()
        engagedUrl = loc.href
        scrolled()
      }
      send('pageview')
    }
  }

  var track = (name, options) => send(name, options)
  var queued = (w.glimpse && w.glimpse.q) || []
  w.glimpse = track
  queued.forEach((args) => track.apply(0, args))

  // Click goals (data-glimpse-event, props from data-glimpse-prop-*), outbound links and
  // file downloads. Navigation is never prevented: the request is sent with keepalive.
  var click = (e) => {
    if (e.type == 'auxclick' && e.button != 1) return
    for (var el = e.target, link; el && el.getAttribute; el = el.parentNode) {
      var goal = el.getAttribute('data-glimpse-event')
      if (goal) {
        var props = {}
        for (var a of el.attributes)
          if (a.name.startsWith('data-glimpse-prop-')) props[a.name.slice(18)] = a.value
        return send(goal, { props })
      }
      if (OUTBOUND || DOWNLOADS) link = link || (el.tagName == 'A' && el.href && el)
    }
    if ((OUTBOUND || DOWNLOADS) && link && /^http/.test(link.protocol)) {
      if (DOWNLOADS) {
        let types = (
          attr('file-types') ||
          'pdf,xlsx,docx,txt,rtf,csv,exe,key,pps,ppt,pptx,7z,pkg,rar,gz,zip,avi,mov,mp4,mpeg,wmv,midi,mp3,wav,wma,dmg'
        ).split(/\s*,\s*/)
        let ext = link.pathname.split('.').pop().toLowerCase()
        if (types.indexOf(ext) >= 0)
          return send('File Download', { props: { url: link.href.split('?')[0] } })
      }
      if (OUTBOUND && link.host != loc.host)
        send('Outbound Link: Click', { props: { url: link.href } })
    }
  }
  d.addEventListener('click', click, true)
  d.addEventListener('auxclick', click, true)

  var history = w.history
  ;['pushState', 'replaceState'].forEach((key) => {
    var original = history[key]
    history[key] = function () {
      original.apply(this, arguments)
      page()
    }
  })
  w.addEventListener('popstate', page)
  if (hashMode) w.addEventListener('hashchange', page)
  page()
})(window, document)
