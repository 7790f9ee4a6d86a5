// Test helper: finding Debian's chromium and launching it headless through puppeteer-core (which downloads no browser).

import { execFileSync } from 'node:child_process';

/** CHROMIUM_PATH, else chromium / chromium-browser on PATH, else null (the browser tests skip and say why). */
export function findChromium(): string | null {
  if (process.env['CHROMIUM_PATH']) return process.env['CHROMIUM_PATH'];
  for (const name of ['chromium', 'chromium-browser']) {
    try {
      return execFileSync('which', [name], { encoding: 'utf8' }).trim() || null;
    } catch { /* not on PATH */ }
  }
  return null;
}

export async function launchChromium(executablePath: string) {
  const puppeteer = (await import('puppeteer-core')).default;
  // root in containers needs --no-sandbox; no GPU here
  return puppeteer.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'] });
}
