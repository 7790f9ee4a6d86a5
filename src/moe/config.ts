// Config validation shared by MoE layers: unknown keys and wrong types are errors naming the key.

export function checkKeys(owner: string, obj: object, allowed: readonly string[]): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) throw new Error(`${owner}: unknown key '${k}' (allowed: ${allowed.join(', ')})`);
  }
}

export function checkType(owner: string, key: string, v: unknown, type: 'number' | 'string' | 'boolean'): void {
  if (v !== undefined && typeof v !== type) throw new Error(`${owner}: ${key} must be a ${type}, got ${JSON.stringify(v)}`);
}
