// The languages of the multilingual UDHR corpus with their family, genus and script labels.
//
// Sources (checked by hand for each row; the tests verify the script column against the text):
// - family: the top-level family of Glottolog 5.0 (https://glottolog.org, Hammarström et al.);
//   Basque is an isolate, which Glottolog lists as its own family "Basque".
// - genus: the genus of WALS Online (Dryer 2013, https://wals.info/languoid/genealogy), one level
//   below the family for Indo-European (Germanic, Romance, Slavic, Indic, Armenian) and the
//   families that WALS splits (Uralic: Finnic, Ugric; Afro-Asiatic: Semitic; Dravidian: Southern,
//   South-Central); the family's name again where WALS has a single genus for it.
// - script: the ISO 15924 code of the script the udhr package's text is written in (Unicode
//   Script property of its letters; Jpan = Han + Hiragana + Katakana, Kore = Hangul + Han).
// Single-language families by construction: Basque, Kartvelian, Japonic, Koreanic, Sino-Tibetan,
// Tai-Kadai, Austroasiatic (the corpus has one language of each).

export interface LanguageInfo {
  /** The udhr package's code of the text (e.g. 'deu_1996' picks one of the two German texts). */
  code: string;
  /** Short English name. */
  name: string;
  family: string;
  genus: string;
  /** ISO 15924 script code. */
  script: string;
}

const L = (code: string, name: string, family: string, genus: string, script: string): LanguageInfo => ({ code, name, family, genus, script });

export const LANGUAGES: readonly LanguageInfo[] = [
  L('eng', 'English', 'Indo-European', 'Germanic', 'Latn'),
  L('nld', 'Dutch', 'Indo-European', 'Germanic', 'Latn'),
  L('deu_1996', 'German', 'Indo-European', 'Germanic', 'Latn'),
  L('swe', 'Swedish', 'Indo-European', 'Germanic', 'Latn'),
  L('dan', 'Danish', 'Indo-European', 'Germanic', 'Latn'),
  L('fra', 'French', 'Indo-European', 'Romance', 'Latn'),
  L('spa', 'Spanish', 'Indo-European', 'Romance', 'Latn'),
  L('ita', 'Italian', 'Indo-European', 'Romance', 'Latn'),
  L('por_PT', 'Portuguese', 'Indo-European', 'Romance', 'Latn'),
  L('cat', 'Catalan', 'Indo-European', 'Romance', 'Latn'),
  L('rus', 'Russian', 'Indo-European', 'Slavic', 'Cyrl'),
  L('ukr', 'Ukrainian', 'Indo-European', 'Slavic', 'Cyrl'),
  L('bul', 'Bulgarian', 'Indo-European', 'Slavic', 'Cyrl'),
  L('pol', 'Polish', 'Indo-European', 'Slavic', 'Latn'),
  L('ces', 'Czech', 'Indo-European', 'Slavic', 'Latn'),
  L('hin', 'Hindi', 'Indo-European', 'Indic', 'Deva'),
  L('mar', 'Marathi', 'Indo-European', 'Indic', 'Deva'),
  L('ben', 'Bengali', 'Indo-European', 'Indic', 'Beng'),
  L('hye', 'Armenian', 'Indo-European', 'Armenian', 'Armn'),
  L('fin', 'Finnish', 'Uralic', 'Finnic', 'Latn'),
  L('est', 'Estonian', 'Uralic', 'Finnic', 'Latn'),
  L('hun', 'Hungarian', 'Uralic', 'Ugric', 'Latn'),
  L('tur', 'Turkish', 'Turkic', 'Turkic', 'Latn'),
  L('kaz', 'Kazakh', 'Turkic', 'Turkic', 'Cyrl'),
  L('uzn_latn', 'Uzbek', 'Turkic', 'Turkic', 'Latn'),
  L('ind', 'Indonesian', 'Austronesian', 'Malayo-Sumbawan', 'Latn'),
  L('tgl', 'Tagalog', 'Austronesian', 'Greater Central Philippine', 'Latn'),
  L('swh', 'Swahili', 'Atlantic-Congo', 'Bantoid', 'Latn'),
  L('zul', 'Zulu', 'Atlantic-Congo', 'Bantoid', 'Latn'),
  L('xho', 'Xhosa', 'Atlantic-Congo', 'Bantoid', 'Latn'),
  L('yor', 'Yoruba', 'Atlantic-Congo', 'Defoid', 'Latn'),
  L('arb', 'Arabic', 'Afro-Asiatic', 'Semitic', 'Arab'),
  L('heb', 'Hebrew', 'Afro-Asiatic', 'Semitic', 'Hebr'),
  L('amh', 'Amharic', 'Afro-Asiatic', 'Semitic', 'Ethi'),
  L('mlt', 'Maltese', 'Afro-Asiatic', 'Semitic', 'Latn'),
  L('tam', 'Tamil', 'Dravidian', 'Southern Dravidian', 'Taml'),
  L('mal', 'Malayalam', 'Dravidian', 'Southern Dravidian', 'Mlym'),
  L('kan', 'Kannada', 'Dravidian', 'Southern Dravidian', 'Knda'),
  L('tel', 'Telugu', 'Dravidian', 'South-Central Dravidian', 'Telu'),
  L('cmn_hans', 'Chinese (Simplified)', 'Sino-Tibetan', 'Chinese', 'Hans'),
  L('jpn', 'Japanese', 'Japonic', 'Japanese', 'Jpan'),
  L('kor', 'Korean', 'Koreanic', 'Korean', 'Kore'),
  L('eus', 'Basque', 'Basque', 'Basque', 'Latn'),
  L('kat', 'Georgian', 'Kartvelian', 'Kartvelian', 'Geor'),
  L('tha', 'Thai', 'Tai-Kadai', 'Kam-Tai', 'Thai'),
  L('vie', 'Vietnamese', 'Austroasiatic', 'Viet-Muong', 'Latn'),
];

/**
 * Low-resource by default (the corpus option `lowResource`): chosen so that some have a
 * high-resource relative in the same genus and script (cat: Romance, ukr: Slavic Cyrillic, mar:
 * Indic Devanagari, est: Finnic, xho: Bantoid) and some have none (eus, kat: single-language
 * families with their own script or none related), which is what separates "rare language" from
 * "rare language with no relatives" in the rare-language study.
 */
export const DEFAULT_LOW_RESOURCE: readonly string[] = ['cat', 'ukr', 'mar', 'est', 'xho', 'eus', 'kat'];

/** Unicode Script property names whose letters make up each ISO 15924 code used above (for the label check). */
export const SCRIPT_UNICODE: Readonly<Record<string, readonly string[]>> = {
  Latn: ['Latin'], Cyrl: ['Cyrillic'], Deva: ['Devanagari'], Beng: ['Bengali'], Armn: ['Armenian'], Arab: ['Arabic'],
  Hebr: ['Hebrew'], Ethi: ['Ethiopic'], Taml: ['Tamil'], Mlym: ['Malayalam'], Knda: ['Kannada'], Telu: ['Telugu'],
  Hans: ['Han'], Jpan: ['Han', 'Hiragana', 'Katakana'], Kore: ['Hangul', 'Han'], Geor: ['Georgian'], Thai: ['Thai'],
};

export function languageInfo(code: string): LanguageInfo {
  const info = LANGUAGES.find((l) => l.code === code);
  if (!info) throw new Error(`languageInfo: '${code}' is not in the multilingual corpus's table (src/data/languages.ts; codes: ${LANGUAGES.map((l) => l.code).join(', ')})`);
  return info;
}
