// Builds the tracker's variants into a directory (default dist/), reproducibly: esbuild at a
// pinned version (package-lock.json), fixed options, no timestamps, no source maps.
//
//   node build.mjs [DIR]   build into DIR and print each variant's size
//   node build.mjs --check build into a temp dir and fail if it differs from dist/
import { build } from 'esbuild'
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync, brotliCompressSync, constants } from 'node:zlib'

const here = dirname(fileURLToPath(import.meta.url))
const extensions = { 'file-downloads': 'DOWNLOADS', engagement: 'ENGAGEMENT', 'outbound-links': 'OUTBOUND' }

/** Every combination of extensions, names sorted: script.js, script.engagement.js, … */
export function variants() {
  const names = Object.keys(extensions).sort()
  const out = []
  for (let mask = 0; mask < 1 << names.length; mask++) {
    const chosen = names.filter((_, i) => mask & (1 << i))
    out.push({ file: ['script', ...chosen, 'js'].join('.'), chosen })
  }
  return out
}

async function buildInto(dir) {
  mkdirSync(dir, { recursive: true })
  const sizes = []
  for (const { file, chosen } of variants()) {
    const define = {}
    for (const [name, flag] of Object.entries(extensions)) define[flag] = String(chosen.includes(name))
    const result = await build({
      entryPoints: [join(here, 'src/tracker.js')],
      bundle: false,
      minify: true,
      target: 'es2017',
      define,
      legalComments: 'none',
      charset: 'utf8',
      write: false,
      logLevel: 'error',
    })
    const code = result.outputFiles[0].contents
    writeFileSync(join(dir, file), code)
    sizes.push({ file, bytes: code.length, gzip: gzipSync(code, { level: 9 }).length,
      brotli: brotliCompressSync(code, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }).length })
  }
  return sizes
}

const arg = process.argv[2]
if (arg === '--check') {
  const tmp = mkdtempSync(join(tmpdir(), 'glimpse-tracker-'))
  try {
    await buildInto(tmp)
    const dist = join(here, 'dist')
    const want = readdirSync(tmp).sort()
    const have = readdirSync(dist).sort()
    const problems = []
    if (want.join() !== have.join()) problems.push(`dist/ holds ${have.join(', ')}; the build makes ${want.join(', ')}`)
    for (const f of want) {
      if (have.includes(f) && !readFileSync(join(tmp, f)).equals(readFileSync(join(dist, f))))
        problems.push(`dist/${f} differs from a fresh build of src/`)
    }
    if (problems.length) {
      console.error(problems.join('\n') + '\nrun `npm ci && npm run build` in tracker-js/ and commit dist/')
      process.exit(1)
    }
    console.log(`tracker-js: dist/ matches a fresh build (${want.length} variants)`)
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
} else if (arg === undefined || !arg.startsWith('-')) {
  const sizes = await buildInto(join(here, arg || 'dist'))
  for (const s of sizes) console.log(`${s.file.padEnd(50)} ${String(s.bytes).padStart(5)} B, gzip ${s.gzip} B, brotli ${s.brotli} B`)
} else {
  console.error('usage: node build.mjs [DIR] | --check')
  process.exit(2)
}
