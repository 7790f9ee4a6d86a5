// Child-process entry of the routing timing: node hierarchical-timing-main.js REQUEST.json prints a
// TimingResult as JSON. The study runs it under `flock /tmp/bench.lock` so that it never measures
// while another benchmark holds the machine.

import { readFileSync } from 'node:fs';
import { measureRouting, type TimingRequest } from './hierarchical-timing.js';

const path = process.argv[2];
if (!path) throw new Error('hierarchical-timing-main: usage: node hierarchical-timing-main.js REQUEST.json');
const req = JSON.parse(readFileSync(path, 'utf8')) as TimingRequest;
process.stdout.write(`${JSON.stringify(measureRouting(req))}\n`);
