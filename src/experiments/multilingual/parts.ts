// The parts of `moe experiment multilingual <part>`, by name: add a part by one entry here (its code lives in its own file).

import type { MultilingualPart } from './part.js';
import { specialisationPart } from './specialisation.js';
import { stabilityPart } from './stability.js';
import { rareLanguagesPart } from './rare-languages.js';
import { paretoPart } from './pareto.js';
import { hierarchicalPart } from './hierarchical.js';

export const MULTILINGUAL_PARTS: Record<string, MultilingualPart> = {
  specialisation: specialisationPart,
  stability: stabilityPart,
  rare: rareLanguagesPart,
  pareto: paretoPart,
  hierarchical: hierarchicalPart,
};
