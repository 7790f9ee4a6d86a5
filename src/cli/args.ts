// A small argument parser: positional words, --flag, --key value / --key=value, repeated keys.

export interface ParsedArgs {
  positional: string[];
  flags: Map<string, string[]>;
  /**
   * Options given without the value they take (`--out` at the end, or before another option).
   * Not an error at parse time: only the command knows its options, and an unknown option must be
   * reported as unknown, not as one that lacks a value (rejectUnknown reports both, unknown first).
   */
  valueless: string[];
}

export function parseArgs(argv: readonly string[], booleanFlags: ReadonlySet<string>): ParsedArgs {
  const positional: string[] = [];
  const flags = new Map<string, string[]>();
  const valueless: string[] = [];
  const put = (k: string, v: string) => flags.set(k, [...(flags.get(k) ?? []), v]);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') { positional.push(...argv.slice(i + 1)); break; }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      if (eq > 0) { put(a.slice(2, eq), a.slice(eq + 1)); continue; }
      const key = a.slice(2);
      if (booleanFlags.has(key)) { put(key, 'true'); continue; }
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) { valueless.push(key); continue; }
      put(key, next);
      i++;
    } else if (a === '-h') {
      put('help', 'true');
    } else {
      positional.push(a);
    }
  }
  return { positional, flags, valueless };
}

/** Throws if an option outside `known` was given, naming it; then if a known option lacks its value. */
export function rejectUnknown(args: ParsedArgs, known: readonly string[], command: string): void {
  for (const k of [...args.flags.keys(), ...args.valueless]) {
    if (!known.includes(k)) throw new Error(`${command}: unknown option --${k} (known: ${known.map((x) => `--${x}`).join(', ')})`);
  }
  const k = args.valueless[0];
  if (k !== undefined) throw new Error(`${command}: option --${k} needs a value (--${k} VALUE or --${k}=VALUE)`);
}

/** The integer value of --key (undefined when absent); anything but an integer >= min is refused, naming the command and the option. */
export function intFlag(args: ParsedArgs, key: string, min: number, command: string): number | undefined {
  const raw = args.flags.get(key)?.[0];
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min) throw new Error(`${command}: --${key} ${raw}: expected an integer >= ${min}`);
  return v;
}

/** Runs a command, turning a thrown error into one "moe: message" line on stderr and exit status 2. */
export async function reportingErrors(main: () => number | Promise<number>): Promise<number> {
  try {
    return await main();
  } catch (e) {
    process.stderr.write(`moe: ${(e as Error).message}\n`);
    return 2;
  }
}
