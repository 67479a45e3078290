// Shared by the end-to-end drivers: Debian's Chromium, launched headless the way this
// machine needs (no sandbox as root, no background networking on a closed network), as a
// normal desktop browser — the collector rightly drops HeadlessChrome as a bot.
import puppeteer from 'puppeteer-core'

export const USER_AGENT =
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36'

/** Launches Chromium with its profile in `userDataDir` (and `extraArgs`). */
export function launchChromium(userDataDir, chromium = process.env.CHROMIUM || '/usr/bin/chromium', extraArgs = []) {
  return puppeteer.launch({
    executablePath: chromium,
    headless: true,
    userDataDir,
    protocolTimeout: 30_000,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--window-size=1366,900',
      `--user-agent=${USER_AGENT}`,
      ...extraArgs,
    ],
    defaultViewport: null,
  })
}

/** Throws when a check fails, naming it. */
export function check(ok, message) {
  if (!ok) throw new Error(`check failed: ${message}`)
}
