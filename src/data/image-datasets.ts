// What each image dataset of a run config is: image geometry, class names, and the statistics
// `data.normalize` applies. The one table that the config check (config/run.ts), training
// (train/run.ts loadImageData) and loading a trained model (models/load.ts) all read, so a checkpoint's preprocessing is recomputed from its
// stored config (data.dataset, data.normalize) exactly as training applied it.

import { FASHION_MNIST_CLASSES, FASHION_MNIST_STATS, MNIST_CLASSES, MNIST_STATS } from './mnist.js';
import { CIFAR10_CLASSES, CIFAR10_STATS, CIFAR100_STATS } from './cifar.js';
import type { Normalize } from './batches.js';

export type ImageDatasetName = 'fashion-mnist' | 'mnist' | 'mnist-idx' | 'cifar10' | 'cifar100';

export interface ImageDatasetInfo {
  /** Channels, rows, columns of one image (CHW). */
  channels: number;
  height: number;
  width: number;
  classes: number;
  /** Class names by label, when the dataset defines them (CIFAR-100's come with the files). */
  classNames?: readonly string[];
  /** The statistics applied after scaling pixels to [0, 1] when data.normalize is true. */
  stats: Normalize;
  /**
   * Whether every copy of the dataset has this geometry and class count, so a config can be checked
   * against it before loading (config/run.ts); mnist-idx reads whatever IDX files it is given.
   */
  fixedShape: boolean;
}

const DATASETS: Readonly<Record<ImageDatasetName, ImageDatasetInfo>> = Object.freeze({
  'fashion-mnist': { channels: 1, height: 28, width: 28, classes: 10, classNames: FASHION_MNIST_CLASSES, stats: FASHION_MNIST_STATS, fixedShape: true },
  mnist: { channels: 1, height: 28, width: 28, classes: 10, classNames: MNIST_CLASSES, stats: MNIST_STATS, fixedShape: true },
  'mnist-idx': { channels: 1, height: 28, width: 28, classes: 10, classNames: MNIST_CLASSES, stats: MNIST_STATS, fixedShape: false },
  cifar10: { channels: 3, height: 32, width: 32, classes: 10, classNames: CIFAR10_CLASSES, stats: CIFAR10_STATS, fixedShape: true },
  cifar100: { channels: 3, height: 32, width: 32, classes: 100, stats: CIFAR100_STATS, fixedShape: true },
});

export function isImageDataset(name: string): name is ImageDatasetName {
  return Object.prototype.hasOwnProperty.call(DATASETS, name);
}

/** The dataset's geometry, classes and statistics; throws for a dataset that is not images. */
export function imageDatasetInfo(name: string): ImageDatasetInfo {
  if (!isImageDataset(name)) throw new Error(`config.data.dataset: '${name}' is not an image dataset (image datasets: ${Object.keys(DATASETS).join(', ')})`);
  return DATASETS[name];
}

/** The normalisation a run config's data section applies to its images, or null for plain [0, 1] pixels. */
export function imageNormalization(data: { dataset: string; normalize: boolean }): Normalize | null {
  return data.normalize ? imageDatasetInfo(data.dataset).stats : null;
}
