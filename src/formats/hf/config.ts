// Hugging Face config.json of the MoE decoder families: model_type check and typed field access with errors naming the file and field.

/** The model_type values this reader accepts. */
export const HF_MODEL_TYPES = ['mixtral', 'qwen2_moe', 'qwen3_moe', 'olmoe'] as const;
export type HFModelType = (typeof HF_MODEL_TYPES)[number];

/**
 * A parsed config.json: the raw object (every key kept, so that a round trip writes it back
 * unchanged) with its model_type checked. Field meaning is the model builder's business.
 */
export interface HFConfig {
  model_type: HFModelType;
  [key: string]: unknown;
}

export function isHFModelType(s: unknown): s is HFModelType {
  return typeof s === 'string' && (HF_MODEL_TYPES as readonly string[]).includes(s);
}

/** Checks that json is a config.json object of a supported family; `file` is named in errors. */
export function parseHFConfig(json: unknown, file: string): HFConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${file}: config.json must hold a JSON object`);
  const mt = (json as Record<string, unknown>)['model_type'];
  if (mt === undefined) throw new Error(`${file}: no model_type (supported: ${HF_MODEL_TYPES.join(', ')})`);
  if (!isHFModelType(mt)) throw new Error(`${file}: model_type ${JSON.stringify(mt)} is not supported (supported: ${HF_MODEL_TYPES.join(', ')})`);
  return json as HFConfig;
}

/** Typed reads of config fields: a missing field takes the family default, a wrong type is an error naming the field. */
export class HFConfigReader {
  constructor(readonly config: HFConfig, readonly file: string) {}

  private fail(key: string, want: string): never {
    throw new Error(`${this.file}: ${key} = ${JSON.stringify(this.config[key])} must be ${want} (model_type ${this.config.model_type})`);
  }

  has(key: string): boolean {
    return this.config[key] !== undefined && this.config[key] !== null;
  }

  /** A positive integer; without a default the field is required. */
  int(key: string, dflt?: number, min = 1): number {
    const v = this.config[key] ?? dflt;
    if (v === undefined) throw new Error(`${this.file}: required field ${key} is missing (model_type ${this.config.model_type})`);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) this.fail(key, `an integer >= ${min}`);
    return v;
  }

  /** A finite number > 0. */
  positive(key: string, dflt: number): number {
    const v = this.config[key] ?? dflt;
    if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) this.fail(key, 'a finite number > 0');
    return v;
  }

  bool(key: string, dflt: boolean): boolean {
    const v = this.config[key] ?? dflt;
    if (typeof v !== 'boolean') this.fail(key, 'true or false');
    return v;
  }

  string(key: string, dflt: string): string {
    const v = this.config[key] ?? dflt;
    if (typeof v !== 'string') this.fail(key, 'a string');
    return v;
  }

  intList(key: string): number[] {
    const v = this.config[key] ?? [];
    if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x) && x >= 0)) this.fail(key, 'a list of non-negative integers');
    return v as number[];
  }

  /** An object or null. */
  object(key: string): Record<string, unknown> | null {
    const v = this.config[key] ?? null;
    if (v !== null && (typeof v !== 'object' || Array.isArray(v))) this.fail(key, 'an object or null');
    return v as Record<string, unknown> | null;
  }
}
