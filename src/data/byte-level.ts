/**
 * GPT-2's byte-level alphabet: the printable character that stands for each byte in the
 * vocabularies of byte-level BPE tokenizers (tokenizer.json, GGUF). Space is "Ġ", newline "Ċ".
 */

let byteToCharTable: string[] | null = null;
let charToByteTable: Map<string, number> | null = null;

/** GPT-2's printable stand-in for each byte: the character byte-level BPE vocabularies use. */
export function byteToUnicode(): readonly string[] {
  if (byteToCharTable) return byteToCharTable;
  const table: string[] = new Array(256);
  const direct = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCharCode(direct(b) ? b : 256 + n++);
  byteToCharTable = table;
  charToByteTable = new Map(table.map((c, b) => [c, b]));
  return table;
}

/** Token bytes -> the byte-level string naming them in tokenizer.json / GGUF. */
export function bytesToByteLevel(bytes: Uint8Array): string {
  const table = byteToUnicode();
  let s = '';
  for (const b of bytes) s += table[b];
  return s;
}

/** The inverse of bytesToByteLevel, or null when `s` holds a character that stands for no byte. */
export function byteLevelToBytes(s: string): Uint8Array | null {
  byteToUnicode();
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const b = charToByteTable!.get(s[i]!);
    if (b === undefined) return null;
    out[i] = b;
  }
  return out;
}
