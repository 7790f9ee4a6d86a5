// `moe dashboard RUN...`: serves the live dashboard page over run directories until SIGINT/SIGTERM.

import { rejectUnknown, type ParsedArgs } from '../cli/args.js';
import { DashboardServer } from './server.js';

export const DASHBOARD_HELP = `moe dashboard RUN_DIR... [--serve http://127.0.0.1:PORT] [--port 0] [--host 127.0.0.1]

A local web page over one or more run directories written by moe train (config.json,
metrics.jsonl), updating live while they train: loss and accuracy curves (runs overlaid), router
entropy against log E, drop fraction, load spread and dead experts, and per layer the expert load
over time as a heatmap when the log carries it (docs/dashboard.md). GET / is the page, GET /health
answers 200 once it listens, GET /api/runs the records, GET /events server-sent events.
  --serve URL  also show a running moe serve's live expert load and expert-cache hits (from its
             /metrics); with --serve, run directories are optional
  --port P   port to listen on (default 0: any free port)
  --host H   address to bind (default 127.0.0.1, this machine only)
The URL is printed on stdout once the server listens. The page needs no network.`;

export async function dashboardCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['port', 'host', 'serve', 'help'], 'dashboard');
  const runs = args.positional.slice(1);
  const rawPort = args.flags.get('port')?.[0] ?? '0';
  const port = Number(rawPort);
  if (rawPort.trim() === '' || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`dashboard: --port ${rawPort}: expected an integer in 0..65535`);
  const host = args.flags.get('host')?.[0] ?? '127.0.0.1';
  const serve = args.flags.get('serve')?.[0];
  const server = new DashboardServer({ runs, ...(serve !== undefined ? { serve } : {}) });
  const url = await server.listen(port, host);
  console.log(`moe dashboard: ${[...server.runs.map((r) => r.name), ...(serve !== undefined ? [`serve ${serve}`] : [])].join(', ')} on ${url}`);
  return new Promise<number>((resolve) => {
    const stop = (): void => { server.close().then(() => resolve(0), () => resolve(1)); };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}
