// Functional byte classes of UTF-8 text (whitespace, digit, punctuation, capital, word start, other
// letter, other), the labels of the "functional experts" measurement.
//
// A byte takes the class of the character it belongs to, so the 2-3 bytes of a Cyrillic or Tamil
// letter share one class. Classes are exclusive, checked in this order: whitespace (\s), digit
// (\p{Nd}), punctuation (\p{P} or \p{S}), capital (\p{Lu} or \p{Lt}), word start (a letter or mark
// whose previous character is not a letter or mark), letter (any other \p{L} / \p{M}), other.
// Scripts written without spaces (Chinese, Japanese, Thai) have word starts only after
// punctuation or digits: their letters land in "letter".

export const BYTE_CLASSES = ['whitespace', 'digit', 'punctuation', 'capital', 'word start', 'letter', 'other'] as const;
export type ByteClass = (typeof BYTE_CLASSES)[number];

const isLetter = (ch: string): boolean => /[\p{L}\p{M}]/u.test(ch);

function charClass(ch: string, prev: string | undefined): number {
  if (/\s/u.test(ch)) return 0;
  if (/\p{Nd}/u.test(ch)) return 1;
  if (/[\p{P}\p{S}]/u.test(ch)) return 2;
  if (/[\p{Lu}\p{Lt}]/u.test(ch)) return 3;
  if (isLetter(ch)) return prev === undefined || !isLetter(prev) ? 4 : 5;
  return 6;
}

/** Class id (index into BYTE_CLASSES) of every byte; bytes of an invalid sequence are 'other'. */
export function byteClasses(bytes: Uint8Array): Int32Array {
  const out = new Int32Array(bytes.length).fill(6);
  let prev: string | undefined;
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i]!;
    const len = b < 0x80 ? 1 : (b & 0xe0) === 0xc0 ? 2 : (b & 0xf0) === 0xe0 ? 3 : (b & 0xf8) === 0xf0 ? 4 : 0;
    if (len === 0 || i + len > bytes.length) {
      prev = undefined;
      i++;
      continue;
    }
    let ch: string;
    try {
      ch = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(i, i + len));
    } catch {
      prev = undefined;
      i++;
      continue;
    }
    out.fill(charClass(ch, prev), i, i + len);
    prev = ch;
    i += len;
  }
  return out;
}
