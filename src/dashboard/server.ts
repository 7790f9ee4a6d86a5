// The dashboard's HTTP server (fastify): the page and its assets, the runs' records, and server-sent events as logs grow.

import Fastify, { type FastifyInstance } from 'fastify';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openRuns, type RunInfo } from './runs.js';
import { MetricsTail, readLog, type LogPosition, type TailOptions } from './tail.js';
import { scrapeServe } from './prometheus.js';

export interface DashboardOptions {
  /** Run directories written by `moe train` (checked at construction; a bad one throws naming it). */
  runs: readonly string[];
  /** Poll settings of the live tails (tests shorten the interval). */
  tail?: TailOptions;
  /** Milliseconds between SSE keep-alive comments (default 15 s): proxies close silent connections. */
  keepAliveMs?: number;
  /** Base URL of a running `moe serve` (http://127.0.0.1:PORT): the page also shows its live expert load and cache hits. */
  serve?: string;
}

/** The client files: compiled code runs from dist/src/dashboard, the page stays in src/dashboard/page (shipped: package.json files has src). */
function pageDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const d of [join(here, 'page'), join(here, '..', '..', '..', 'src', 'dashboard', 'page')]) {
    if (existsSync(join(d, 'index.html'))) return d;
  }
  throw new Error(`dashboard: the page's files (src/dashboard/page) are missing next to ${here}`);
}

/** uPlot's browser build, served from node_modules so the page needs no network. */
function uplotDir(): string {
  return dirname(createRequire(import.meta.url).resolve('uplot'));
}

const ASSETS: Record<string, { dir: 'page' | 'uplot'; file: string; type: string }> = {
  'dashboard.js': { dir: 'page', file: 'dashboard.js', type: 'text/javascript; charset=utf-8' },
  'heatmaps.js': { dir: 'page', file: 'heatmaps.js', type: 'text/javascript; charset=utf-8' },
  'serve.js': { dir: 'page', file: 'serve.js', type: 'text/javascript; charset=utf-8' },
  'dashboard.css': { dir: 'page', file: 'dashboard.css', type: 'text/css; charset=utf-8' },
  'uplot.js': { dir: 'uplot', file: 'uPlot.iife.min.js', type: 'text/javascript; charset=utf-8' },
  'uplot.css': { dir: 'uplot', file: 'uPlot.min.css', type: 'text/css; charset=utf-8' },
};

/** `ino:offset` per run, comma-separated, as /api/runs reports them: where each live tail starts. */
function parseFrom(raw: string | undefined, n: number): (LogPosition | null)[] {
  if (raw === undefined || raw === '') return new Array(n).fill(null);
  const parts = raw.split(',');
  if (parts.length !== n) throw new Error(`from: expected ${n} positions (one per run), got ${parts.length}`);
  return parts.map((p, i) => {
    const m = /^(\d+):(\d+)$/.exec(p);
    if (!m) throw new Error(`from: position ${i} '${p}' is not ino:offset`);
    return { ino: Number(m[1]), offset: Number(m[2]) };
  });
}

export class DashboardServer {
  readonly app: FastifyInstance;
  readonly runs: RunInfo[];
  private readonly pages: string;
  private readonly uplot: string;
  /** Live SSE connections' cleanups (closed on shutdown). */
  private readonly streams = new Set<() => void>();

  constructor(private readonly opts: DashboardOptions) {
    if (opts.serve !== undefined) {
      let u: URL;
      try {
        u = new URL(opts.serve);
      } catch {
        throw new Error(`dashboard: --serve ${opts.serve} is not a URL (give http://HOST:PORT of moe serve)`);
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`dashboard: --serve ${opts.serve}: expected an http:// or https:// URL`);
    }
    // a serve-only page has no run directories
    this.runs = opts.serve !== undefined && opts.runs.length === 0 ? [] : openRuns(opts.runs);
    this.pages = pageDir();
    this.uplot = uplotDir();
    this.app = Fastify({ logger: false });
    this.routes();
  }

  /** Open SSE connections (tests check that a disconnect cleans up). */
  get openStreams(): number {
    return this.streams.size;
  }

  async listen(port = 0, host = '127.0.0.1'): Promise<string> {
    await this.app.listen({ port, host });
    const addr = this.app.server.address();
    if (!addr || typeof addr === 'string') throw new Error('dashboard: the server has no TCP address');
    const h = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    return `http://${h}:${addr.port}`;
  }

  async close(): Promise<void> {
    for (const end of [...this.streams]) end();
    await this.app.close();
  }

  private routes(): void {
    const app = this.app;
    app.get('/', async (_req, reply) => reply.type('text/html; charset=utf-8').send(readFileSync(join(this.pages, 'index.html'))));
    app.get('/health', async () => ({ status: 'ok', runs: this.runs.length }));
    app.get<{ Params: { name: string } }>('/assets/:name', async (req, reply) => {
      const a = ASSETS[req.params.name];
      if (!a) return reply.code(404).send({ error: `no asset '${req.params.name}'` });
      return reply.type(a.type).send(readFileSync(join(a.dir === 'page' ? this.pages : this.uplot, a.file)));
    });
    // the page polls this; the dashboard scrapes on the page's behalf (moe serve sends no CORS headers)
    app.get('/api/serve', async (_req, reply) => {
      if (this.opts.serve === undefined) return reply.code(404).send({ error: 'no --serve URL given' });
      try {
        return { url: this.opts.serve, ...(await scrapeServe(this.opts.serve)) };
      } catch (e) {
        return reply.code(502).send({ url: this.opts.serve, error: (e as Error).message });
      }
    });
    app.get('/api/runs', async () => ({
      serve: this.opts.serve ?? null,
      runs: await Promise.all(this.runs.map(async (r) => {
        const log = await readLog(r.metricsFile);
        return {
          name: r.name, dir: r.dir, modelType: r.modelType, numExperts: r.numExperts,
          logE: r.numExperts !== null ? Math.log(r.numExperts) : null,
          records: log.records, bad: log.bad, position: `${log.position.ino}:${log.position.offset}`,
        };
      })),
    }));
    app.get<{ Querystring: { from?: string } }>('/events', async (req, reply) => {
      let from: (LogPosition | null)[];
      try {
        from = parseFrom(req.query.from, this.runs.length);
      } catch (e) {
        return reply.code(400).send({ error: (e as Error).message });
      }
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      res.write(': connected\n\n');
      const send = (event: string, data: unknown): void => { res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`); };
      const tails = this.runs.map((r, run) => new MetricsTail(r.metricsFile, from[run] ?? null, {
        records: (records, p) => send('records', { run, records, position: `${p.ino}:${p.offset}` }),
        reset: () => send('reset', { run }),
        bad: (count) => send('bad', { run, count }),
      }, this.opts.tail));
      const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), this.opts.keepAliveMs ?? 15_000);
      const end = (): void => {
        if (!this.streams.delete(end)) return;
        clearInterval(keepAlive);
        for (const t of tails) t.stop();
        res.end();
      };
      this.streams.add(end);
      req.raw.on('close', end);
      res.on('close', end);
      for (const t of tails) t.start();
    });
  }
}
