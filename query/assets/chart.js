// Glimpse dashboard: the chart (loaded before app.js, whose helpers it uses when called:
// el, svg, formatMetric, shortDate, metricLabel, comparedDates). One metric over the period's
// buckets as a line with its area, the compared period's facing buckets as a dashed line, one
// hover target per bucket whose data attributes carry the numbers shown.
'use strict'

function niceMax(v) {
  if (v <= 5) return 5
  const p = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p
  return 10 * p
}

let lastSeries = null
/** The chart of one metric over the period's buckets, with the comparison's facing buckets as
 * a dashed line (the API pairs them: `comparison.date`, `null` where none faces a bucket). */
function renderChart(results, iv, metric, comparison) {
  lastSeries = [results, iv, metric, comparison]
  const box = $('chart')
  box.replaceChildren()
  const width = Math.max(box.clientWidth, 280)
  const height = width < 500 ? 180 : 240
  const pad = { l: 44, r: 8, t: 10, b: 24 }
  const w = width - pad.l - pad.r
  const h = height - pad.t - pad.b
  const compared = (r) => (r.comparison ? r.comparison[metric] : null)
  const values = results.flatMap((r) => [r[metric], compared(r)]).filter((v) => v != null)
  const max = niceMax(Math.max(1, ...values))
  const n = results.length
  const x = (i) => pad.l + (n <= 1 ? w / 2 : (i * w) / (n - 1))
  const y = (v) => pad.t + h - (v / max) * h
  const label = metricLabel(metric)
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': `${label} over time` })
  for (const t of [0, max / 2, max]) {
    chart.append(svg('line', { x1: pad.l, x2: width - pad.r, y1: y(t), y2: y(t), class: 'grid-line' }))
    const text = svg('text', { x: pad.l - 6, y: y(t) + 4, 'text-anchor': 'end', class: 'axis' })
    text.textContent = formatMetric(metric, t)
    chart.append(text)
  }
  const step = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(w / 70))))
  const shown = (i) => i - (i % step)
  results.forEach((r, i) => {
    if (i % step === 0 || i === n - 1) {
      // The last bucket's label, drawn to the left of its point, would run into the one before
      // it unless that one is far enough away.
      if (i === n - 1 && i % step !== 0 && x(i) - x(shown(i)) < 60) return
      const text = svg('text', { x: x(i), y: height - 6, 'text-anchor': i === 0 ? 'start' : i === n - 1 ? 'end' : 'middle', class: 'axis' })
      text.textContent = shortDate(r.date, iv)
      chart.append(text)
    }
  })
  // A path through the buckets that have a value; a gap where one has none.
  const path = (value) => {
    let d = ''
    let pen = 'M'
    results.forEach((r, i) => {
      const v = value(r)
      if (v == null) {
        pen = 'M'
        return
      }
      d += `${pen}${x(i).toFixed(1)},${y(v).toFixed(1)}`
      pen = 'L'
    })
    return d
  }
  if (n > 0) {
    const line = path((r) => r[metric])
    chart.append(svg('path', { d: `${line}L${x(n - 1)},${y(0)}L${x(0)},${y(0)}Z`, class: 'area-main' }))
    if (comparison) chart.append(svg('path', { d: path(compared), class: 'line-comparison' }))
    chart.append(svg('path', { d: line, class: 'line-main' }))
  }
  // One hover target per bucket, with its numbers as a native tooltip (and as data for tests).
  results.forEach((r, i) => {
    const half = n <= 1 ? w / 2 : w / (n - 1) / 2
    const hit = svg('rect', { x: x(i) - half, y: pad.t, width: 2 * half, height: h, class: 'hit', 'data-date': r.date, 'data-value': String(r[metric]) })
    const title = svg('title')
    title.textContent = `${r.date}: ${formatMetric(metric, r[metric])} ${label.toLowerCase()}`
    if (r.comparison) {
      hit.dataset.comparisonDate = r.comparison.date
      hit.dataset.comparison = String(r.comparison[metric])
      title.textContent += `; ${r.comparison.date}: ${formatMetric(metric, r.comparison[metric])}`
    }
    hit.append(title)
    chart.append(hit)
    if (n <= 40) chart.append(svg('circle', { cx: x(i), cy: y(r[metric]), r: 2.5, class: 'dot-main' }))
  })
  const legend = el('div', { class: 'legend' }, el('span', { class: 'key main', text: label }))
  if (comparison) legend.append(el('span', { class: 'key comparison', text: `Compared: ${comparedDates(comparison)}` }))
  box.append(chart, legend)
}
