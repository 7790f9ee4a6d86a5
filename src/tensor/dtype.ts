// Element types and their typed-array storage.

/** float32 for training and inference; float64 only on the js backend (exact gradient checks); int32 for indices. */
export type DType = 'float32' | 'float64' | 'int32';
export type FloatArray = Float32Array | Float64Array;
export type TypedArray = Float32Array | Float64Array | Int32Array;

export function allocArray(dtype: DType, n: number): TypedArray {
  switch (dtype) {
    case 'float32': return new Float32Array(n);
    case 'float64': return new Float64Array(n);
    case 'int32': return new Int32Array(n);
  }
}

/** Node's Buffer where there is one (not in browsers): its allocUnsafeSlow takes memory without clearing it. */
const nodeBuffer = (globalThis as { Buffer?: { allocUnsafeSlow(size: number): Uint8Array } }).Buffer;

/** Below this many bytes clearing costs next to nothing and allocArray is used. */
const UNINITIALIZED_MIN_BYTES = 1 << 20;

let poisonUninitialized = false;

/**
 * Tests only: fill every buffer from allocUninitialized with NaN (float) so that an element a
 * kernel fails to write shows in its result.
 */
export function setUninitializedPoison(on: boolean): void {
  poisonUninitialized = on;
}

/** Whether setUninitializedPoison is on (scratch buffers reused from earlier calls are poisoned too). */
export function isPoisoningUninitialized(): boolean {
  return poisonUninitialized;
}

/**
 * Like allocArray, but the contents are unspecified (torch.empty): only for an output that the
 * kernel writes in full. Large float buffers skip calloc's clearing (a 64 MiB output cost a
 * memset, or a page fault per 4 KiB, on every op call); small ones, int32 and browsers get
 * allocArray.
 */
export function allocUninitialized(dtype: DType, n: number): TypedArray {
  let a: TypedArray;
  const width = dtype === 'float32' ? 4 : 8;
  if (dtype !== 'int32' && nodeBuffer && n * width >= UNINITIALIZED_MIN_BYTES) {
    const bytes = nodeBuffer.allocUnsafeSlow(n * width);
    a = dtype === 'float32' ? new Float32Array(bytes.buffer, bytes.byteOffset, n) : new Float64Array(bytes.buffer, bytes.byteOffset, n);
  } else {
    a = allocArray(dtype, n);
  }
  if (poisonUninitialized && dtype !== 'int32') a.fill(NaN);
  return a;
}

export function dtypeOf(data: TypedArray): DType {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  return 'int32';
}

export function isFloat(dtype: DType): boolean {
  return dtype !== 'int32';
}
