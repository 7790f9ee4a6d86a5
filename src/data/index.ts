// Dataset loaders and batching: IDX (MNIST family), CIFAR binary, byte-level text; seeded splits and batches.

export { DataError } from './errors.js';
export { parseIdx, readIdx, encodeIdx, writeIdx, isGzip, maybeGunzip, type IdxArray, type IdxDtype, type IdxDataOf, type IdxExpect } from './idx.js';
export {
  loadFashionMnist, loadMnistIdx, loadMnistDigits, FASHION_MNIST_DIR, FASHION_MNIST_CLASSES, MNIST_CLASSES, MNIST_STATS, FASHION_MNIST_STATS,
  type MnistSplits, type IdxLoadOptions, type MnistDigitsOptions,
} from './mnist.js';
export {
  readCifar10, readCifar100, loadCifar10, loadCifar100, encodeCifar10, encodeCifar100, writeCifar10, writeCifar100,
  CIFAR_PIXELS, CIFAR10_CLASSES, CIFAR10_STATS, CIFAR100_STATS, type CifarOptions, type Cifar100Options,
} from './cifar.js';
export {
  loadUdhr, loadTextFile, loadJsonl, loadBytes, encodeBytes, decodeBytes, byteSplits, BYTE_VOCAB_SIZE, type UdhrText, type UdhrOptions,
} from './text.js';
export {
  bytesToImages, subsetImages, deriveSeed, splitIndices, IndexBatches, BatchIterator, randomWindows,
  type ImageSet, type Normalize, type SplitOptions, type BatchOptions, type BatchIteratorOptions, type ArrayDataset, type Batch,
} from './batches.js';
export { loadUdhrCorpus, type UdhrCorpus, type UdhrCorpusOptions } from './udhr-corpus.js';
