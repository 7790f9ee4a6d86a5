// Typed configuration: each section is a schema of fields with a type, a default and a comment.
// Validation fills defaults and rejects unknown keys and wrong types, naming the key; --set
// overrides are parsed by the field's type.

export type FieldType = 'number' | 'integer' | 'string' | 'boolean' | 'json';

export interface Field {
  type: FieldType;
  /** The default; undefined makes the field required. */
  default?: unknown;
  /** One line on what the field means (shown by `moe train --help`). */
  doc: string;
  min?: number;
  max?: number;
  /** Allowed values for strings. */
  oneOf?: readonly string[];
  /** null is allowed (e.g. capacityFactor: null for dropless). */
  nullable?: boolean;
  /** Checks a structured (json) value after the type check and returns it normalised; errors name `path`, the field's full name. */
  check?: (value: unknown, path: string) => unknown;
}

export type Schema = Record<string, Field>;

function typeOk(f: Field, v: unknown): boolean {
  if (v === null) return f.nullable === true;
  switch (f.type) {
    case 'number': return typeof v === 'number' && Number.isFinite(v);
    case 'integer': return typeof v === 'number' && Number.isInteger(v);
    case 'string': return typeof v === 'string';
    case 'boolean': return typeof v === 'boolean';
    // a JSON field whose default is an object (a router config) or a list (task heads) takes the same
    // kind of value, so that "router": "topk" is refused here, naming the field, and not deeper down
    case 'json': return jsonKind(f.default) === undefined || jsonKind(v) === jsonKind(f.default);
  }
}

function jsonKind(v: unknown): 'object' | 'list' | undefined {
  if (Array.isArray(v)) return 'list';
  return typeof v === 'object' && v !== null ? 'object' : undefined;
}

/** What a field takes, for errors: 'integer', 'number or null', 'a JSON object like {"type":"topk"}'. */
function expected(f: Field): string {
  const kind = f.type === 'json' ? jsonKind(f.default) : undefined;
  const what = kind === 'object' ? `a JSON object like ${JSON.stringify(f.default)}` : kind === 'list' ? `a JSON list like ${JSON.stringify(f.default)}` : f.type;
  return f.nullable ? `${what} or null` : what;
}

/** Validates obj against schema (path names the section in errors) and returns it with defaults filled. */
export function validate<T>(schema: Schema, obj: unknown, path: string): T {
  if (obj === undefined) obj = {};
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new Error(`${path}: expected an object, got ${JSON.stringify(obj)}`);
  const out: Record<string, unknown> = {};
  const given = obj as Record<string, unknown>;
  for (const k of Object.keys(given)) {
    if (!(k in schema)) throw new Error(`${path}.${k}: unknown key (known: ${Object.keys(schema).join(', ')})`);
  }
  for (const [k, f] of Object.entries(schema)) {
    const v = k in given ? given[k] : f.default;
    if (v === undefined) throw new Error(`${path}.${k}: required (${f.doc})`);
    if (!typeOk(f, v)) throw new Error(`${path}.${k}: expected ${expected(f)}, got ${JSON.stringify(v)}`);
    if (typeof v === 'number') {
      if (f.min !== undefined && v < f.min) throw new Error(`${path}.${k}: ${v} is below the minimum ${f.min}`);
      if (f.max !== undefined && v > f.max) throw new Error(`${path}.${k}: ${v} is above the maximum ${f.max}`);
    }
    if (typeof v === 'string' && f.oneOf && !f.oneOf.includes(v)) throw new Error(`${path}.${k}: '${v}' is not one of ${f.oneOf.join(', ')}`);
    out[k] = f.check && v !== null ? f.check(v, `${path}.${k}`) : v;
  }
  return out as T;
}

/** Parses a --set value for a field: numbers, booleans, null and JSON by the field's type. */
export function parseValue(f: Field, raw: string, key: string): unknown {
  if (raw === 'null' && f.nullable) return null;
  switch (f.type) {
    case 'number':
    case 'integer': {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n)) throw new Error(`--set ${key}=${raw}: expected a number`);
      return n;
    }
    case 'boolean':
      if (raw !== 'true' && raw !== 'false') throw new Error(`--set ${key}=${raw}: expected true or false`);
      return raw === 'true';
    case 'string': return raw;
    case 'json':
      try {
        return JSON.parse(raw);
      } catch {
        throw new Error(`--set ${key}=${raw}: expected JSON`);
      }
  }
}

/** One line per field: name, type, default, doc (for help texts). */
export function describe(schema: Schema, prefix: string): string[] {
  return Object.entries(schema).map(([k, f]) => {
    const def = f.default === undefined ? 'required' : `default ${JSON.stringify(f.default)}`;
    return `  ${(prefix + k).padEnd(28)} ${f.type.padEnd(8)} ${def.padEnd(22)} ${f.doc}`;
  });
}
