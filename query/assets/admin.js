// Glimpse dashboard, admin side: a site's settings (#settings), adding a site (#add-site), the
// signed-in person's account (#account) and accepting an invitation (?invitation=TOKEN). Loaded
// before app.js, whose helpers ($, el, api, authPost, jsonAnswer, state, me, sites, load) it uses once the
// page runs. Like app.js, it puts data from the API in the DOM only as text and attributes.
'use strict'

/** A request to the Sites or accounts API with a JSON body. With a key, the key; else the
 * session cookie, naming this origin (the page's no-referrer policy would send `Origin: null`,
 * which the service refuses for signed-in state changes). */
async function send(method, path, body) {
  const headers = { Accept: 'application/json' }
  if (body) headers['Content-Type'] = 'application/json'
  if (key()) headers.Authorization = `Bearer ${key()}`
  const response = await fetch(path, {
    method,
    headers,
    body: body ? JSON.stringify(body) : undefined,
    credentials: key() ? 'omit' : 'same-origin',
    referrerPolicy: 'strict-origin',
    cache: 'no-store',
  })
  return jsonAnswer(response)
}
const query = (params) => `?${new URLSearchParams(params)}`

/** Per key and site, whether the key may change the site (a `sites` key), as the service said. */
const keyAdmins = new Map()
/** Asks the service whether the key entered may change `site`: the site's answer includes its
 * tracker snippet only for those who may. */
async function learnKeyScope(site) {
  const which = `${key()}\n${site}`
  if (!key() || !site || keyAdmins.has(which)) return
  try {
    keyAdmins.set(which, !!(await send('GET', `/api/v1/sites/${encodeURIComponent(site)}`)).tracker)
  } catch {
    keyAdmins.set(which, false)
  }
}

/** Whether the signed-in person (or the key entered) may change `site`. */
function mayAdmin(site) {
  if (state.auth) return false
  if (key()) return keyAdmins.get(`${key()}\n${site}`) === true
  if (!me) return false
  return me.owner || (me.sites || []).some((s) => s.domain === site && (s.role === 'admin' || s.role === 'editor'))
}

/** Copies `text`: the Clipboard API, else a selected hidden text area and execCommand. */
async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text)
    return true
  } catch {
    const area = el('textarea', { class: 'offscreen', readonly: '' })
    area.value = text
    document.body.append(area)
    area.select()
    let ok = false
    try {
      ok = document.execCommand('copy')
    } catch {
      ok = false
    }
    area.remove()
    return ok
  }
}

/** A "Copy" button for what `text()` returns, saying whether it worked. */
function copyButton(text, label = 'Copy') {
  const button = el('button', { type: 'button', class: 'secondary copy', text: label })
  button.addEventListener('click', async () => {
    const ok = await copyText(text())
    button.textContent = ok ? 'Copied ✓' : 'Select and copy by hand'
    button.dataset.copied = String(ok)
    setTimeout(() => {
      button.textContent = label
    }, 2500)
  })
  return button
}

/** A read-only field showing a secret or link, with its copy button. */
function copyField(value, label) {
  const input = el('input', { type: 'text', readonly: '', value, 'aria-label': label, spellcheck: 'false', class: 'mono' })
  input.addEventListener('focus', () => input.select())
  return el('div', { class: 'copy-field' }, input, copyButton(() => value))
}

/** An error line for a section, emptied or filled by `say`. */
function errorLine() {
  return el('p', { class: 'error', role: 'alert' })
}
function say(line, e) {
  const detail = e instanceof HttpError && !e.message.startsWith('HTTP ') ? ` (HTTP ${e.status})` : ''
  line.textContent = e ? `${e.message}${detail}` : ''
}

function field(label, input) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`
  input.id = id
  return el('div', { class: 'field' }, el('label', { for: id, text: label }), input)
}
function select(options, value) {
  const s = el('select', {}, ...options.map(([v, text]) => el('option', { value: v, text })))
  if (value != null) s.value = value
  return s
}
function timeZones() {
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : []
  return zones.includes('UTC') ? zones : ['UTC', ...zones]
}
const browserZone = () => Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'
function zonePicker(value) {
  const zones = timeZones()
  if (value && !zones.includes(value)) zones.unshift(value)
  return select(
    zones.map((z) => [z, z]),
    value,
  )
}

function section(name, title, ...children) {
  return el('section', { class: 'card admin-card', 'data-section': name }, el('h2', { text: title }), ...children)
}

/** A form whose submit runs `action` with the button disabled, errors shown in `line`. */
function form(attrs, line, action, ...children) {
  const f = el('form', { class: 'admin-form', ...attrs }, ...children)
  f.addEventListener('submit', async (e) => {
    e.preventDefault()
    const button = f.querySelector('button[type=submit]')
    button.disabled = true
    say(line)
    try {
      await action()
    } catch (err) {
      say(line, err)
    } finally {
      button.disabled = false
    }
  })
  return f
}
const submit = (text) => el('button', { type: 'submit', text })

/** A list whose rows `load()` fills; shows an inline error when loading fails. */
function liveList(name, fill) {
  const list = el('ul', { class: 'admin-list', 'data-list': name })
  const line = errorLine()
  const reload = async () => {
    say(line)
    try {
      const items = await fill()
      list.replaceChildren(...(items.length ? items : [el('li', { class: 'empty', text: 'None yet' })]))
    } catch (e) {
      list.replaceChildren()
      say(line, e)
    }
  }
  return { list, line, reload }
}

// --- Routing ----------------------------------------------------------------------------------
const ADMIN_VIEWS = ['settings', 'add-site', 'account']
/** The admin view the URL asks for, or ''. */
function adminRoute() {
  const route = location.hash.slice(1)
  return ADMIN_VIEWS.includes(route) ? route : ''
}
/** The settings view's polls (the tracker check), stopped when the view is left. */
const adminPolls = new Set()
function stopAdminPolling() {
  for (const poll of adminPolls) clearInterval(poll)
  adminPolls.clear()
}
/** Opens `route` ('' for the stats) for `state`'s site. Not through `location.hash`: Chromium
 * fires popstate for that at once, which would read the site from the old URL. */
function navigate(route) {
  history.pushState(null, '', `${location.pathname}${location.search}${route ? `#${route}` : ''}`)
  writeUrl(false)
  load()
}

/** Renders `route` into #admin (replacing what was there), unless a newer load started. */
async function renderAdmin(route, seq) {
  stopAdminPolling()
  const root = el('div', { class: 'admin', 'data-view': route })
  const views = { settings: settingsView, 'add-site': addSiteView, account: accountView }
  await views[route](root)
  if (seq !== loadSeq) return
  $('admin').replaceChildren(root)
  document.title = `${{ settings: 'Settings', 'add-site': 'Add a site', account: 'Account' }[route]} · Glimpse`
  document.body.dataset.state = 'ready'
  root.querySelector('h1')?.focus()
}

// --- Add a site (the owner) -------------------------------------------------------------------
async function addSiteView(root) {
  const line = errorLine()
  const domain = el('input', { type: 'text', required: '', placeholder: 'example.com', autocomplete: 'off', spellcheck: 'false', inputmode: 'url' })
  const zone = zonePicker(browserZone())
  root.append(
    el('h1', { tabindex: '-1', text: 'Add a site' }),
    section(
      'add-site',
      'New site',
      el('p', { class: 'hint', text: 'The domain as visitors see it, without https:// or www. The time zone decides where your days begin and end.' }),
      form({ id: 'add-site-form' }, line, async () => {
        const created = await send('POST', '/api/v1/sites', { domain: domain.value.trim(), timezone: zone.value })
        state.site = created.domain
        sites = []
        navigate('settings')
      }, field('Domain', domain), field('Time zone', zone), submit('Add site')),
      line,
    ),
  )
}

// --- Settings of one site -----------------------------------------------------------------------
async function settingsView(root) {
  const site = state.site
  root.append(el('h1', { tabindex: '-1', text: `Settings for ${site}` }))
  if (!site) {
    root.append(el('p', { class: 'error', text: 'No site to show.' }))
    return
  }
  if (!mayAdmin(site)) {
    root.append(el('p', { class: 'error', role: 'alert', text: `Your role on ${site} does not include its settings: ask its owner or an admin.` }))
    return
  }
  let info
  try {
    info = await send('GET', `/api/v1/sites/${encodeURIComponent(site)}`)
  } catch (e) {
    const line = errorLine()
    say(line, e)
    root.append(line)
    return
  }
  const configured = info.managed_in === 'configuration'
  if (configured) {
    root.append(
      el('p', { class: 'note managed', 'data-managed': 'configuration', text: 'Managed in configuration: this site\'s time zone, goals and shared links are set in the configuration file ([[sites]]) and shown here read-only.' }),
    )
  }
  root.append(generalSection(info, configured))
  if (info.tracker) root.append(trackerSection(info))
  root.append(goalsSection(site, configured), funnelsSection(site, configured), linksSection(site, configured), membersSection(site), keysSection(site), auditSection(site))
  if (me && me.owner && !configured) root.append(deleteSection(site))
}

function generalSection(info, configured) {
  const line = errorLine()
  const zone = zonePicker(info.timezone)
  zone.disabled = configured
  // A rename keeps the site's stats, goals, links, members and keys; its first domain stays
  // accepted, so pages not yet updated keep counting.
  const domain = el('input', { type: 'text', id: 'domain', value: info.domain, required: '', autocomplete: 'off', spellcheck: 'false', inputmode: 'url' })
  domain.disabled = configured
  const saved = el('span', { class: 'saved', 'aria-live': 'polite' })
  const children = [field('Domain', domain), field('Time zone', zone)]
  if (info.first_domain) children.push(el('p', { class: 'hint', text: `Renamed from ${info.first_domain}, which is still accepted.` }))
  if (!configured) children.push(el('div', { class: 'actions' }, submit('Save'), saved))
  return section(
    'general',
    'General',
    form({ id: 'timezone-form' }, line, async () => {
      const answer = await send('PUT', `/api/v1/sites/${encodeURIComponent(info.domain)}`, { domain: domain.value.trim().toLowerCase(), timezone: zone.value })
      saved.textContent = `Saved: ${answer.domain}, ${answer.timezone}`
      if (answer.domain !== info.domain) {
        // The snippet and the site switcher follow the new name.
        state.site = answer.domain
        sites = []
        navigate('settings')
      }
    }, ...children),
    line,
  )
}

function trackerSection(info) {
  const variants = info.tracker.variants || []
  const picker = select(variants.map((v) => [v.name, v.name === 'core' ? 'Page views only (core)' : v.name.replaceAll('.', ' + ')]))
  const code = el('code', { id: 'snippet', text: variants[0]?.snippet || info.tracker.snippet })
  picker.addEventListener('change', () => {
    code.textContent = variants.find((v) => v.name === picker.value).snippet
  })
  const status = el('p', { id: 'received', class: 'received waiting', role: 'status', 'data-received': 'false', text: 'Waiting for the first event…' })
  // Each check stops its own poll only: two loads at once render the view twice, and the
  // discarded copy's poll (its status never shown, or no longer) must neither run on nor stop
  // the shown one's, which left the shown status waiting until the next reload.
  let poll = null
  let ticks = 0
  let shown = false
  const stop = () => {
    clearInterval(poll)
    adminPolls.delete(poll)
  }
  const check = async () => {
    ticks += 1
    if (status.isConnected) shown = true
    else if (shown || ticks > 5) return stop()
    if (status.dataset.received === 'true') return stop()
    try {
      const body = await api('/api/v1/stats/aggregate', { site_id: info.domain, period: '30d', metrics: 'visitors' }, { scoped: false })
      if (body.results.visitors.value > 0) {
        status.textContent = 'Received ✓ — events are arriving'
        status.className = 'received ok'
        status.dataset.received = 'true'
        stop()
      }
    } catch (e) {
      status.textContent = `Could not check for events: ${e.message}`
    }
  }
  check()
  poll = setInterval(check, 3000)
  adminPolls.add(poll)
  return section(
    'tracker',
    'Tracker snippet',
    el('p', { class: 'hint', text: 'Paste this in the <head> of every page of the site.' }),
    field('Variant', picker),
    el('pre', { class: 'snippet' }, code),
    el('div', { class: 'actions' }, copyButton(() => code.textContent, 'Copy snippet')),
    status,
  )
}

function goalsSection(site, configured) {
  const { list, line, reload } = liveList('goals', async () => {
    const body = await send('GET', `/api/v1/sites/goals${query({ site_id: site })}`)
    return body.goals.map((g) => {
      const row = el('li', { 'data-goal': g.display_name }, el('span', { class: 'grow', text: g.display_name }), el('span', { class: 'tag', text: g.goal_type === 'page' ? 'page' : 'event' }))
      if (!configured) {
        row.append(
          el('button', {
            type: 'button',
            class: 'danger-link',
            text: 'Delete',
            'aria-label': `Delete goal ${g.display_name}`,
            onclick: () => send('DELETE', `/api/v1/sites/goals/${encodeURIComponent(g.id)}`, { site_id: site }).then(reload, (e) => say(line, e)),
          }),
        )
      }
      return row
    })
  })
  reload()
  const parts = [el('p', { class: 'hint', text: 'A goal counts the visitors who sent an event of that name, or viewed a page (a * matches any part of a path).' }), list, line]
  if (!configured) {
    const kind = select([
      ['event', 'Custom event'],
      ['page', 'Page visit'],
    ])
    const value = el('input', { type: 'text', required: '', placeholder: 'Signup', spellcheck: 'false' })
    kind.addEventListener('change', () => {
      value.placeholder = kind.value === 'page' ? '/pricing' : 'Signup'
    })
    const addLine = errorLine()
    parts.push(
      form({ id: 'goal-form', class: 'admin-form inline' }, addLine, async () => {
        const goal = kind.value === 'page' ? { goal_type: 'page', page_path: value.value.trim() } : { goal_type: 'event', event_name: value.value.trim() }
        await send('PUT', '/api/v1/sites/goals', { site_id: site, ...goal })
        value.value = ''
        sites = [] // the stats view's Goals card reads the goal names with the sites
        await reload()
      }, field('Type', kind), field('Event name or page path', value), submit('Add goal')),
      addLine,
    )
  }
  return section('goals', 'Goals', ...parts)
}

/** A step as written in the settings, one per line: `/path` (a page, `*` matching any part),
 * `goal: Name`, or else a custom event's name. */
function readStep(line) {
  const text = line.trim()
  if (text.startsWith('/')) return { page: text }
  const goal = /^goal:\s*(.+)$/i.exec(text)
  return goal ? { goal: goal[1].trim() } : { event: text }
}
const stepText = (s) => (s.page != null ? s.page : s.goal != null ? `goal: ${s.goal}` : s.event)

function funnelsSection(site, configured) {
  const name = el('input', { type: 'text', required: '', placeholder: 'Signup', maxlength: '120', spellcheck: 'false' })
  const steps = el('textarea', { required: '', rows: '4', placeholder: '/pricing\ngoal: Signup\nPurchase', spellcheck: 'false' })
  const { list, line, reload } = liveList('funnels', async () => {
    const body = await send('GET', `/api/v1/sites/funnels${query({ site_id: site })}`)
    return body.funnels.map((f) => {
      const row = el('li', { 'data-funnel': f.name }, el('span', { class: 'grow' }, el('strong', { text: f.name }), el('span', { class: 'hint', text: ` ${f.labels.join(' → ')}` })))
      if (!configured) {
        row.append(
          el('button', { type: 'button', class: 'link', text: 'Edit', 'aria-label': `Edit funnel ${f.name}`, onclick: () => {
            name.value = f.name
            steps.value = f.steps.map(stepText).join('\n')
            name.focus()
          } }),
          el('button', {
            type: 'button',
            class: 'danger-link',
            text: 'Delete',
            'aria-label': `Delete funnel ${f.name}`,
            onclick: () => send('DELETE', `/api/v1/sites/funnels/${encodeURIComponent(f.name)}`, { site_id: site }).then(reload, (e) => say(line, e)),
          }),
        )
      }
      return row
    })
  })
  reload()
  const parts = [el('p', { class: 'hint', text: 'A funnel counts the visitors who went through its steps in order within one visit: 2 to 8 steps, one per line — a page path (* matches any part), "goal: Name" for one of the goals, or a custom event\'s name. Saving under an existing name replaces its steps.' }), list, line]
  if (!configured) {
    const addLine = errorLine()
    parts.push(
      form({ id: 'funnel-form', class: 'admin-form' }, addLine, async () => {
        const lines = steps.value.split('\n').filter((l) => l.trim())
        await send('PUT', '/api/v1/sites/funnels', { site_id: site, name: name.value.trim(), steps: lines.map(readStep) })
        name.value = ''
        steps.value = ''
        await reload()
      }, field('Name', name), field('Steps, one per line', steps), submit('Save funnel')),
      addLine,
    )
  }
  return section('funnels', 'Funnels', ...parts)
}

function linksSection(site, configured) {
  const { list, line, reload } = liveList('links', async () => {
    const body = await send('GET', `/api/v1/sites/shared-links${query({ site_id: site })}`)
    return body.shared_links.map((link) => {
      const url = new URL(link.url, location.origin).href
      const row = el('li', { class: 'stacked', 'data-link': link.name }, el('div', { class: 'row-line' }, el('strong', { class: 'grow', text: link.name })), copyField(url, `Share link ${link.name}`))
      if (!configured) {
        row.firstChild.append(
          el('button', {
            type: 'button',
            class: 'danger-link',
            text: 'Revoke',
            'aria-label': `Revoke share link ${link.name}`,
            onclick: () => send('DELETE', `/api/v1/sites/shared-links/${encodeURIComponent(link.name)}`, { site_id: site }).then(reload, (e) => say(line, e)),
          }),
        )
      }
      return row
    })
  })
  reload()
  const parts = [el('p', { class: 'hint', text: 'Anyone with a share link sees this site\'s stats without signing in, until it is revoked.' }), list, line]
  if (!configured) {
    const name = el('input', { type: 'text', required: '', placeholder: 'Public dashboard', maxlength: '100' })
    const addLine = errorLine()
    parts.push(
      form({ id: 'link-form', class: 'admin-form inline' }, addLine, async () => {
        await send('PUT', '/api/v1/sites/shared-links', { site_id: site, name: name.value.trim() })
        name.value = ''
        await reload()
      }, field('Name', name), submit('Create link')),
      addLine,
    )
  }
  return section('links', 'Shared links', ...parts)
}

function membersSection(site) {
  const { list, line, reload } = liveList('members', async () => {
    const body = await send('GET', `/api/v1/sites/guests${query({ site_id: site })}`)
    return body.guests.map((g) =>
      el(
        'li',
        { 'data-member': g.email },
        el('span', { class: 'grow', text: g.email }),
        el('span', { class: 'tag', text: g.role }),
        el('span', { class: g.accepted ? 'tag ok' : 'tag', text: g.accepted ? 'accepted' : 'invited' }),
        el('button', {
          type: 'button',
          class: 'danger-link',
          text: 'Remove',
          'aria-label': `Remove ${g.email}`,
          onclick: () => send('DELETE', `/api/v1/sites/guests/${encodeURIComponent(g.email)}`, { site_id: site }).then(reload, (e) => say(line, e)),
        }),
      ),
    )
  })
  reload()
  const email = el('input', { type: 'email', required: '', autocomplete: 'off', spellcheck: 'false', placeholder: 'colleague@example.com' })
  const role = select([
    ['viewer', 'Viewer (reads the stats)'],
    ['editor', 'Editor (also changes settings)'],
  ])
  const addLine = errorLine()
  const invited = el('div', { id: 'invitation', class: 'invited', 'aria-live': 'polite' })
  return section(
    'members',
    'Members',
    el('p', { class: 'hint', text: 'People who sign in to see this site. An invited person sets a password through the invitation link.' }),
    list,
    line,
    form({ id: 'invite-form', class: 'admin-form inline' }, addLine, async () => {
      invited.replaceChildren()
      const answer = await send('PUT', '/api/v1/sites/guests', { site_id: site, email: email.value.trim(), role: role.value })
      email.value = ''
      if (answer.invitation_url) {
        const url = new URL(answer.invitation_url, location.origin).href
        const mail = { sent: 'It was also sent by e-mail.', failed: 'Sending it by e-mail failed: send it yourself.' }[answer.mail] || 'Send it to them.'
        invited.append(el('p', { text: `Invitation link for ${answer.email} (${answer.role}). ${mail}` }), copyField(url, 'Invitation link'))
      } else {
        invited.append(el('p', { text: `${answer.email} is now ${answer.role}.` }))
      }
      await reload()
    }, field('E-mail', email), field('Role', role), submit('Invite')),
    addLine,
    invited,
  )
}

function keysSection(site) {
  const { list, line, reload } = liveList('keys', async () => {
    const body = await send('GET', `/api/v1/sites/keys${query({ site_id: site })}`)
    return body.keys
      .filter((k) => !k.revoked)
      .map((k) =>
        el(
          'li',
          { 'data-key': k.name },
          el('span', { class: 'grow', text: k.name }),
          el('span', { class: 'tag', text: k.scope }),
          el('span', { class: 'muted', text: k.created_at ? String(k.created_at).slice(0, 10) : '' }),
          el('button', {
            type: 'button',
            class: 'danger-link',
            text: 'Revoke',
            'aria-label': `Revoke key ${k.name}`,
            onclick: () => send('DELETE', `/api/v1/sites/keys/${encodeURIComponent(k.key_id)}`, { site_id: site }).then(reload, (e) => say(line, e)),
          }),
        ),
      )
  })
  reload()
  const name = el('input', { type: 'text', required: '', placeholder: 'CI export', maxlength: '100' })
  const scope = select([
    ['stats', 'Stats (read)'],
    ['sites', 'Sites (read and change settings)'],
  ])
  const addLine = errorLine()
  const created = el('div', { id: 'new-key', class: 'invited', 'aria-live': 'polite' })
  return section(
    'keys',
    'API keys',
    el('p', { class: 'hint', text: 'Keys for scripts: sent as "Authorization: Bearer KEY". A key is shown once, when it is created.' }),
    list,
    line,
    form({ id: 'key-form', class: 'admin-form inline' }, addLine, async () => {
      created.replaceChildren()
      const answer = await send('PUT', '/api/v1/sites/keys', { site_id: site, name: name.value.trim(), scope: scope.value })
      name.value = ''
      created.append(el('p', { text: `Key "${answer.name}" (${answer.scope}): copy it now, it will not be shown again.` }), copyField(answer.key, 'New API key'))
      await reload()
    }, field('Name', name), field('Scope', scope), submit('Create key')),
    addLine,
    created,
  )
}

function auditSection(site) {
  const { list, line, reload } = liveList('audit', async () => {
    const body = await send('GET', `/api/v1/sites/audit${query({ site_id: site, limit: 20 })}`)
    return body.entries.map((e) =>
      el(
        'li',
        { class: 'audit' },
        el('time', { datetime: new Date(e.time * 1000).toISOString(), text: new Date(e.time * 1000).toLocaleString('en') }),
        el('span', { class: 'tag', text: e.action }),
        el('span', { class: 'grow', text: `${e.detail}` }),
        el('span', { class: 'muted', text: e.actor }),
      ),
    )
  })
  reload()
  return section('audit', 'Audit log', el('p', { class: 'hint', text: 'The 20 most recent changes to this site.' }), list, line)
}

function deleteSection(site) {
  const line = errorLine()
  const confirm = el('input', { type: 'text', required: '', autocomplete: 'off', spellcheck: 'false' })
  return section(
    'delete',
    'Delete this site',
    el('p', { class: 'hint', text: 'Deletes the site, its goals, links and keys, and erases all its stats. This cannot be undone.' }),
    form({ id: 'delete-form', class: 'admin-form inline' }, line, async () => {
      if (confirm.value.trim() !== site) throw new Error(`type ${site} to confirm`)
      await send('DELETE', `/api/v1/sites/${encodeURIComponent(site)}`)
      state.site = ''
      sites = []
      navigate('')
    }, field(`Type ${site} to confirm`, confirm), el('button', { type: 'submit', class: 'danger', text: 'Delete site and data' })),
    line,
  )
}

// --- Account --------------------------------------------------------------------------------------
async function accountView(root) {
  root.append(el('h1', { tabindex: '-1', text: 'Your account' }))
  if (!me) {
    root.append(el('p', { class: 'error', text: 'Sign in with your e-mail and password to manage your account.' }))
    return
  }
  const roles = me.owner ? 'Owner of this Glimpse: every site' : (me.sites || []).map((s) => `${s.domain} (${s.role})`).join(', ') || 'No site yet'
  root.append(section('who', 'Signed in', el('p', { id: 'account-email', text: me.email }), el('p', { class: 'hint', text: roles })))

  const line = errorLine()
  const current = el('input', { type: 'password', required: '', autocomplete: 'current-password' })
  const fresh = el('input', { type: 'password', required: '', autocomplete: 'new-password', minlength: '8' })
  const again = el('input', { type: 'password', required: '', autocomplete: 'new-password', minlength: '8' })
  const done = el('p', { id: 'password-changed', class: 'saved', 'aria-live': 'polite' })
  root.append(
    section(
      'password',
      'Change password',
      form({ id: 'password-form' }, line, async () => {
        done.textContent = ''
        if (fresh.value !== again.value) throw new Error('the new passwords differ')
        await authPost('/api/auth/password', { current_password: current.value, new_password: fresh.value })
        for (const input of [current, fresh, again]) input.value = ''
        done.textContent = 'Password changed. Your other sessions were signed out.'
      }, field('Current password', current), field('New password', fresh), field('New password again', again), submit('Change password')),
      line,
      done,
    ),
  )
  const everywhereLine = errorLine()
  root.append(
    section(
      'sessions',
      'Sessions',
      el('p', { class: 'hint', text: 'Signs you out on every device and browser, this one included.' }),
      el('button', {
        type: 'button',
        id: 'signout-everywhere',
        class: 'secondary',
        text: 'Sign out everywhere',
        onclick: async () => {
          try {
            await authPost('/api/auth/logout-everywhere')
            me = null
            sites = []
            navigate('')
          } catch (e) {
            say(everywhereLine, e)
          }
        },
      }),
      everywhereLine,
    ),
  )
}

// --- Invitation ---------------------------------------------------------------------------------------
/** `?invitation=TOKEN`: who is invited where, and a form to set a password and sign in. */
async function invitationView(token) {
  const root = el('div', { class: 'admin invitation', 'data-view': 'invitation' })
  root.append(el('h1', { tabindex: '-1', text: 'Invitation' }))
  const line = errorLine()
  let invitation
  try {
    invitation = await send('GET', `/api/auth/invitation${query({ token })}`)
  } catch (e) {
    say(line, e)
    root.append(section('invitation', 'This invitation cannot be used', line, el('p', { class: 'hint', text: 'Ask whoever invited you for a new link.' })))
    return root
  }
  const email = el('input', { type: 'email', readonly: '', value: invitation.email, autocomplete: 'username' })
  const password = el('input', { type: 'password', required: '', autocomplete: 'new-password', minlength: '8' })
  const again = el('input', { type: 'password', required: '', autocomplete: 'new-password', minlength: '8' })
  root.append(
    section(
      'invitation',
      `You are invited to ${invitation.site} as ${invitation.role}`,
      el('p', { class: 'hint', text: 'Choose a password to sign in with from now on. If you already have an account here, enter its password instead.' }),
      form({ id: 'invitation-form' }, line, async () => {
        if (password.value !== again.value) throw new Error('the passwords differ')
        me = await authPost('/api/auth/accept-invitation', { token, password: password.value })
        sites = []
        state = readUrl()
        state.site = invitation.site
        history.replaceState(null, '', `${location.pathname}?site=${encodeURIComponent(invitation.site)}`)
        load()
      }, field('E-mail', email), field('Password', password), field('Password again', again), submit('Set password and sign in')),
      line,
    ),
  )
  return root
}
