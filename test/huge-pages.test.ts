// adviseHugePages: large weight buffers are advised for transparent huge pages where Linux offers
// them (THP "madvise" or "always"); small buffers and MOE_HUGE_PAGES=0 are left alone.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { adviseHugePages, nativeInfo } from '../src/backends/native/index.js';

const THP = '/sys/kernel/mm/transparent_hugepage/enabled';
const thp = existsSync(THP) ? readFileSync(THP, 'utf8') : '';
const skip = !nativeInfo() ? 'native addon not built' : !/\[(madvise|always)\]/.test(thp) ? `transparent huge pages unavailable (${THP}: ${thp.trim() || 'absent'})` : false;

test('adviseHugePages advises the whole 2 MiB pages of a large buffer, not small ones, not when opted out', { skip }, () => {
  const big = new Float32Array(4 << 20); // 16 MiB: at least 7 whole huge pages whatever its alignment
  const advised = adviseHugePages(big);
  assert.ok(advised >= 7 * 2 ** 21 && advised <= big.byteLength && advised % 2 ** 21 === 0, `advised ${advised} bytes of ${big.byteLength}`);
  assert.equal(adviseHugePages(new Float32Array(1024)), 0);
  const before = process.env['MOE_HUGE_PAGES'];
  process.env['MOE_HUGE_PAGES'] = '0';
  try {
    assert.equal(adviseHugePages(new Float32Array(4 << 20)), 0);
  } finally {
    if (before === undefined) delete process.env['MOE_HUGE_PAGES'];
    else process.env['MOE_HUGE_PAGES'] = before;
  }
});
