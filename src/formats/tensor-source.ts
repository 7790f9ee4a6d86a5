// The one interface through which model builders read weights, whatever file they came from.

/**
 * A stored tensor's element type. The listed ones are the types readers convert; a reader may
 * report any other string (e.g. 'I64') so that errors can name it.
 */
export type SourceDType = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0' | string;

/** Where one tensor lives and what it holds. `shape` is the HF layout (e.g. [out, in] per expert). */
export interface TensorInfo {
  name: string;
  dtype: SourceDType;
  shape: number[];
  /** The file that holds the tensor (a shard, a .gguf), for error messages. */
  file: string;
}

/** A tensor's stored bytes in a file: [offset, offset + bytes), of the stored dtype, row-major in the HF shape. */
export interface TensorLocation {
  file: string;
  offset: number;
  bytes: number;
  dtype: SourceDType;
}

/**
 * Tensors of a model file set, read one at a time (never the whole file into the heap).
 * HF tensor names and HF layouts are the lingua franca: a GGUF source presents HF names and
 * shapes, so the model builder knows one naming only.
 */
export interface TensorSource {
  /** Every tensor name, in a stable order. */
  names(): string[];
  /** Throws naming the tensor and the files searched when it is missing. */
  info(name: string): TensorInfo;
  /** Converted to f32, row-major, shape = info(name).shape. */
  read(name: string): Float32Array;
  /**
   * Where the tensor's stored bytes lie, for reading them again while the model runs (experts left
   * on disk); null when they are not stored as one contiguous range as-is. Optional: sources held
   * in memory have no file.
   */
  locate?(name: string): TensorLocation | null;
  /** Releases file handles; reads after close throw. */
  close(): void;
}

/** Tensors held in memory, presented as a source (tests, `toHF` output fed back into `fromHF`). */
export class MemoryTensorSource implements TensorSource {
  private readonly map = new Map<string, { data: Float32Array; shape: number[] }>();
  private closed = false;

  constructor(
    tensors: Iterable<[string, Float32Array, number[]]>,
    private readonly label = '<memory>',
  ) {
    for (const [name, data, shape] of tensors) {
      const n = shape.reduce((a, b) => a * b, 1);
      if (n !== data.length) {
        throw new Error(`tensor ${name}: shape [${shape.join(', ')}] has ${n} elements, data has ${data.length}`);
      }
      if (this.map.has(name)) throw new Error(`tensor ${name} given twice`);
      this.map.set(name, { data, shape: shape.slice() });
    }
  }

  names(): string[] {
    return [...this.map.keys()];
  }

  info(name: string): TensorInfo {
    const t = this.get(name);
    return { name, dtype: 'F32', shape: t.shape.slice(), file: this.label };
  }

  read(name: string): Float32Array {
    return this.get(name).data.slice();
  }

  close(): void {
    this.closed = true;
  }

  private get(name: string): { data: Float32Array; shape: number[] } {
    if (this.closed) throw new Error(`${this.label}: tensor source is closed (reading ${name})`);
    const t = this.map.get(name);
    if (!t) throw new Error(`tensor ${name} not found in ${this.label}`);
    return t;
  }
}
