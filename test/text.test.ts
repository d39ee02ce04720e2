import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MinigptError } from '../src/errors.js';
import { DEFAULT_CLEAN, cleanRecord, cleanText, legacyClean, loadText, scanUtf8, splitTrainVal } from '../src/data/text.js';

/** Runs `body` with a fresh temporary folder that is removed afterwards, pass or fail. */
async function withTempDir<T>(body: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-text-'));
  try {
    return await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Asserts that `promise` rejects with a MinigptError whose message matches every pattern. */
async function assertMinigptError(promise: Promise<unknown>, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof MinigptError, `expected a MinigptError, got ${String(err)}`);
    for (const pattern of patterns) assert.match(err.message, pattern);
    assert.ok(!err.message.includes('\n'), 'message is one line');
    return true;
  });
}

const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// ---- loadText: files and folders ----

test('loadText returns the contents of a text file unchanged', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'corpus.txt');
    await writeFile(file, 'First line.\r\nSecond — with ünïcödé 😀 and 中文.\n');
    assert.equal(await loadText(file), 'First line.\r\nSecond — with ünïcödé 😀 and 中文.\n');
  });
});

test('loadText reads a file with any extension when it is named directly', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'shakespeare.dat');
    await writeFile(file, 'To be, or not to be');
    assert.equal(await loadText(file), 'To be, or not to be');
  });
});

test('loadText drops a UTF-8 byte order mark', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'bom.txt');
    await writeFile(file, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('hello')]));
    assert.equal(await loadText(file), 'hello');
  });
});

test('loadText reads a folder recursively in sorted path order, joining files with a blank line', async () => {
  await withTempDir(async (dir) => {
    await mkdir(join(dir, 'b', 'deeper'), { recursive: true });
    await mkdir(join(dir, 'a'));
    // Written out of order so a directory-order listing would not pass by luck.
    await writeFile(join(dir, 'b', 'deeper', 'z.text'), 'four');
    await writeFile(join(dir, 'c.md'), 'five');
    await writeFile(join(dir, 'a', 'x.txt'), 'one');
    await writeFile(join(dir, 'b', 'a.txt'), 'two');
    await writeFile(join(dir, 'b', 'b.jsonl'), '{"text":"three"}\n');
    assert.equal(await loadText(dir), 'one\n\ntwo\n\nthree\n\nfour\n\nfive');
  });
});

test('loadText skips files of other extensions and hidden entries in a folder', async () => {
  await withTempDir(async (dir) => {
    await mkdir(join(dir, '.git'));
    await writeFile(join(dir, '.git', 'notes.txt'), 'hidden folder');
    await writeFile(join(dir, '.draft.txt'), 'hidden file');
    await writeFile(join(dir, 'image.png'), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0, 0]));
    await writeFile(join(dir, 'data.json'), '{"text":"not taken"}');
    await writeFile(join(dir, 'README.TXT'), 'upper-case extension');
    await writeFile(join(dir, 'story.txt'), 'story');
    assert.equal(await loadText(dir), 'upper-case extension\n\nstory');
  });
});

test('loadText skips empty files inside a folder', async () => {
  await withTempDir(async (dir) => {
    await writeFile(join(dir, 'a.txt'), 'alpha');
    await writeFile(join(dir, 'b.txt'), '');
    await writeFile(join(dir, 'c.txt'), 'gamma');
    assert.equal(await loadText(dir), 'alpha\n\ngamma');
  });
});

test('loadText follows a symlinked file inside a folder', async () => {
  await withTempDir(async (dir) => {
    await mkdir(join(dir, 'corpus'));
    await writeFile(join(dir, 'elsewhere.txt'), 'linked');
    await symlink(join(dir, 'elsewhere.txt'), join(dir, 'corpus', 'link.txt'));
    assert.equal(await loadText(join(dir, 'corpus')), 'linked');
  });
});

test('loadText follows a symlinked folder inside a folder, and a link back to an ancestor (a loop) is read once', async () => {
  await withTempDir(async (dir) => {
    await mkdir(join(dir, 'corpus'));
    await mkdir(join(dir, 'other'));
    await writeFile(join(dir, 'corpus', 'a.txt'), 'top');
    await writeFile(join(dir, 'other', 'l.txt'), 'more');
    await symlink(join(dir, 'other'), join(dir, 'corpus', 'more'));
    await symlink(join(dir, 'corpus'), join(dir, 'other', 'back'));
    assert.equal(await loadText(join(dir, 'corpus')), 'top\n\nmore');
    // A folder holding only a linked folder has text files.
    await mkdir(join(dir, 'only'));
    await symlink(join(dir, 'other'), join(dir, 'only', 'link'));
    assert.match(await loadText(join(dir, 'only')), /more/);
  });
});

// ---- loadText: JSONL ----

test('loadText reads the "text" field of each JSONL line, joining documents with a blank line', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'docs.jsonl');
    await writeFile(file, '{"text":"first doc","id":1}\n\n{"text":"second\\ndoc"}\r\n  \n{"text":"third"}');
    assert.equal(await loadText(file), 'first doc\n\nsecond\ndoc\n\nthird');
  });
});

test('loadText reads the field named by textField from JSONL', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'docs.jsonl');
    await writeFile(file, '{"content":"alpha","text":"ignored"}\n{"content":"beta"}\n');
    assert.equal(await loadText(file, { textField: 'content' }), 'alpha\n\nbeta');
  });
});

test('loadText names the file and line number of a JSONL line that is not JSON', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'docs.jsonl');
    await writeFile(file, '{"text":"ok"}\n\n{"text": "unterminated}\n');
    await assertMinigptError(loadText(file), new RegExp(`^${escapeRegExp(file)}:3: line is not valid JSON`));
  });
});

test('loadText rejects a JSONL line that is not an object', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'docs.jsonl');
    await writeFile(file, '{"text":"ok"}\n["text"]\n');
    await assertMinigptError(loadText(file), new RegExp(`${escapeRegExp(file)}:2: expected a JSON object, got an array`));
  });
});

test('loadText names the line and the missing field of a JSONL object without it', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'docs.jsonl');
    await writeFile(file, '{"text":"ok"}\n{"body":"no text field"}\n');
    await assertMinigptError(
      loadText(file),
      new RegExp(`${escapeRegExp(file)}:2: object has no "text" field`),
      /"body"/,
      /pass textField: "NAME" to choose the field/,
    );
  });
});

test('loadText rejects a JSONL text field that is not a string', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'docs.jsonl');
    await writeFile(file, '{"content":42}\n');
    await assertMinigptError(
      loadText(file, { textField: 'content' }),
      new RegExp(`${escapeRegExp(file)}:1: field "content" is a number, expected a string`),
    );
  });
});

test('loadText rejects a JSONL file with only blank lines', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'docs.jsonl');
    await writeFile(file, '\n  \n\n');
    await assertMinigptError(loadText(file), new RegExp(`${escapeRegExp(file)}: JSONL file has no records`));
  });
});

// ---- loadText: encoding ----

test('loadText rejects invalid UTF-8, naming the file, the byte offset and the line', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'latin1.txt');
    // "ok\ncaf" then 0xE9 ("é" in Latin-1) followed by an ASCII byte: invalid at byte 6.
    await writeFile(file, Buffer.from([0x6f, 0x6b, 0x0a, 0x63, 0x61, 0x66, 0xe9, 0x21]));
    await assertMinigptError(
      loadText(file),
      new RegExp(`^${escapeRegExp(file)}: invalid UTF-8 at byte 6 \\(line 2\\);`),
      /pass invalidUtf8: "replace"$/,
    );
  });
});

test('loadText with invalidUtf8 "replace" substitutes U+FFFD and warns once with the count', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'mixed.txt');
    // Two bad sequences: a lone continuation byte at 1 and a truncated 3-byte sequence at 4.
    await writeFile(file, Buffer.from([0x61, 0x80, 0x62, 0x63, 0xe2, 0x82, 0x64]));
    const warnings: string[] = [];
    const text = await loadText(file, { invalidUtf8: 'replace', onWarning: (m) => warnings.push(m) });
    assert.equal(text, 'a\uFFFDbc\uFFFDd');
    assert.deepEqual(warnings, [`${file}: replaced 2 invalid UTF-8 sequences with U+FFFD (first at byte 1)`]);
  });
});

test('loadText with invalidUtf8 "replace" does not warn about valid text', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'fine.txt');
    await writeFile(file, 'all good 😀');
    const warnings: string[] = [];
    await loadText(file, { invalidUtf8: 'replace', onWarning: (m) => warnings.push(m) });
    assert.deepEqual(warnings, []);
  });
});

test('loadText with invalidUtf8 "replace" warns once for a whole folder', async () => {
  await withTempDir(async (dir) => {
    await writeFile(join(dir, 'a.txt'), Buffer.from([0x61, 0xff]));
    await writeFile(join(dir, 'b.txt'), Buffer.from([0xfe, 0x62, 0xc3]));
    const warnings: string[] = [];
    await loadText(dir, { invalidUtf8: 'replace', onWarning: (m) => warnings.push(m) });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /replaced 3 invalid UTF-8 sequences with U\+FFFD in 2 files/);
    assert.match(warnings[0]!, new RegExp(`first in ${escapeRegExp(join(dir, 'a.txt'))} at byte 1`));
  });
});

test('scanUtf8 counts exactly the replacement characters that TextDecoder produces', () => {
  const cases: number[][] = [
    [0xc0, 0x80], // overlong 2-byte lead: each byte is its own error
    [0xe0, 0x80, 0x80], // overlong 3-byte
    [0xed, 0xa0, 0x80], // encoded surrogate
    [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
    [0xf0, 0x9f, 0x98], // truncated emoji at end of input
    [0xe2, 0x28, 0xa1], // broken by an ASCII byte
    [0xf8, 0x88, 0x80, 0x80, 0x80], // 5-byte form
    [0x41, 0xc3, 0xa9, 0xef, 0xbf, 0xbd], // valid, including a literal U+FFFD
  ];
  for (const bytes of cases) {
    const decoded = new TextDecoder('utf-8', { ignoreBOM: true }).decode(new Uint8Array(bytes));
    const literal = bytes.length === 6 ? 1 : 0; // the valid case spells one U+FFFD itself
    const expected = [...decoded].filter((c) => c === '\uFFFD').length - literal;
    assert.equal(scanUtf8(new Uint8Array(bytes)).errorCount, expected, `bytes ${bytes.map((b) => b.toString(16))}`);
  }
});

test('scanUtf8 reports where the first bad sequence starts, or -1 for valid bytes', () => {
  assert.equal(scanUtf8(new TextEncoder().encode('héllo 😀')).firstOffset, -1);
  assert.equal(scanUtf8(new Uint8Array([0x61, 0x62, 0xf0, 0x9f, 0x41])).firstOffset, 2);
});

// ---- loadText: things that are not usable text ----

test('loadText rejects an empty file', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'empty.txt');
    await writeFile(file, '');
    await assertMinigptError(loadText(file), new RegExp(`^${escapeRegExp(file)}: file is empty`));
  });
});

test('loadText rejects a file that holds only whitespace', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'blank.txt');
    await writeFile(file, ' \n\t\n');
    await assertMinigptError(loadText(file), new RegExp(`^${escapeRegExp(file)}: contains no text, only whitespace`));
  });
});

test('loadText rejects a file with NUL bytes in its first 8 KB as binary', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'model.txt');
    const bytes = Buffer.alloc(100, 0x41);
    bytes[50] = 0;
    await writeFile(file, bytes);
    await assertMinigptError(loadText(file), new RegExp(`^${escapeRegExp(file)}: looks like a binary file \\(NUL byte at offset 50\\)`));
  });
});

test('loadText rejects UTF-16 text with advice to re-encode it', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'windows.txt');
    await writeFile(file, Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('hi', 'utf16le')]));
    await assertMinigptError(loadText(file), /file is UTF-16 encoded; re-encode it as UTF-8/);
  });
});

test('loadText rejects a binary file inside a folder, naming that file', async () => {
  await withTempDir(async (dir) => {
    await writeFile(join(dir, 'a.txt'), 'fine');
    await writeFile(join(dir, 'b.txt'), Buffer.from([0x00, 0x01, 0x02]));
    await assertMinigptError(loadText(dir), new RegExp(`^${escapeRegExp(join(dir, 'b.txt'))}: looks like a binary file`));
  });
});

test('loadText reports a missing path', async () => {
  await withTempDir(async (dir) => {
    const missing = join(dir, 'nope.txt');
    await assertMinigptError(loadText(missing), new RegExp(`^${escapeRegExp(missing)}: no such file or folder`));
  });
});

test('loadText reports an unreadable file as permission denied', { skip: process.getuid?.() === 0 ? 'root can read any file' : false }, async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'secret.txt');
    await writeFile(file, 'secret');
    await chmod(file, 0o000);
    await assertMinigptError(loadText(file), new RegExp(`^${escapeRegExp(file)}: permission denied`));
  });
});

test('loadText rejects a folder with no text files, saying which extensions it looks for', async () => {
  await withTempDir(async (dir) => {
    await mkdir(join(dir, 'sub'));
    await writeFile(join(dir, 'sub', 'photo.jpg'), 'not text');
    await writeFile(join(dir, 'data.csv'), 'a,b');
    await assertMinigptError(
      loadText(dir),
      new RegExp(`^${escapeRegExp(dir)}: folder has no text files \\(\\.txt, \\.md, \\.text, \\.jsonl\\)`),
      /it has 2 other files/,
    );
  });
});

test('loadText rejects a folder whose text files are all empty', async () => {
  await withTempDir(async (dir) => {
    await writeFile(join(dir, 'a.txt'), '');
    await writeFile(join(dir, 'b.md'), '');
    await assertMinigptError(loadText(dir), new RegExp(`^${escapeRegExp(dir)}: all 2 text files in the folder are empty`));
  });
});

// ---- cleanText ----

const ALL_OFF = { nfc: false, newlines: false, pageBreaks: false, controlChars: false, collapseBlankLines: false, lowercase: false };

test('DEFAULT_CLEAN turns every step on except lowercasing', () => {
  assert.deepEqual({ ...DEFAULT_CLEAN }, { nfc: true, newlines: true, pageBreaks: true, controlChars: true, collapseBlankLines: true, lowercase: false });
});

test('cleanText with every step off returns well-formed text unchanged', () => {
  const messy = 'Cafe\u0301\r\n\u0007\n\n\n\nEND';
  assert.equal(cleanText(messy, ALL_OFF), messy);
});

test('cleanText makes each unpaired surrogate U+FFFD whatever the steps, before removing controls (which would join two into a character); pairs stay', async () => {
  assert.equal(cleanText('x\ud800y\udc00', ALL_OFF), 'x\ufffdy\ufffd');
  assert.equal(cleanText('a\udb7e\u001c\ude0bb'), 'a\ufffd\ufffdb');
  assert.equal(cleanText('\u{1F600}\ud83d\ude00', ALL_OFF), '\u{1F600}\u{1F600}');
  // A JSONL record's "\ud800" reaches a char vocabulary as U+FFFD, which an HF tokenizer.json can hold.
  const { cleanDocuments } = await import('../src/data/documents.js');
  const { buildCharTokenizer, END_OF_TEXT } = await import('../src/data/tokenizer.js');
  const [doc] = cleanDocuments(['lone \ud800 high'], END_OF_TEXT);
  const vocab = buildCharTokenizer(doc!).toJSON() as unknown as { vocab: string[] };
  assert.ok(vocab.vocab.includes('\ufffd') && !vocab.vocab.some((c) => /[\ud800-\udfff]/.test(c)), JSON.stringify(vocab.vocab));
});

test('cleanText nfc composes a base letter and combining accent into one character', () => {
  assert.equal(cleanText('Cafe\u0301', { ...ALL_OFF, nfc: true }), 'Caf\u00e9');
  assert.equal(cleanText('Cafe\u0301', { ...ALL_OFF }), 'Cafe\u0301');
});

test('cleanText newlines turns CRLF and lone CR into LF', () => {
  assert.equal(cleanText('a\r\nb\rc\nd', { ...ALL_OFF, newlines: true }), 'a\nb\nc\nd');
});

test('cleanText controlChars removes C0, C1 and DEL but keeps tab, newline and carriage return', () => {
  const input = 'a\u0000b\u0007c\u001bd\u007fe\u0085f\u009fg\th\ni\rj\u000bk\u000cl';
  assert.equal(cleanText(input, { ...ALL_OFF, controlChars: true }), 'abcdefg\th\ni\rjkl');
});

test('cleanText pageBreaks turns form feed, vertical tab and NEL into newlines (control-chars alone drops them), so pages stay apart as words', () => {
  assert.equal(cleanText('Page one.\fPage two.\u000bnext\u0085line'), 'Page one.\nPage two.\nnext\nline');
  assert.equal(cleanText('end.\n\f\f\f\nStart'), 'end.\n\nStart');
  assert.equal(cleanText('Page one.\fPage two.', { pageBreaks: false }), 'Page one.Page two.');
  assert.equal(cleanText('a\fb', { ...ALL_OFF, pageBreaks: true }), 'a\nb');
});

test('cleaning records: written with pageBreaks spelt out; read back, one without it (from before the step) cleaned without it', () => {
  assert.deepEqual(cleanRecord(undefined), { pageBreaks: true });
  assert.deepEqual(cleanRecord({ lowercase: true }), { lowercase: true, pageBreaks: true });
  assert.deepEqual(cleanRecord({ pageBreaks: false }), { pageBreaks: false });
  assert.deepEqual(legacyClean(null), { pageBreaks: false });
  assert.deepEqual(legacyClean({ lowercase: true }), { lowercase: true, pageBreaks: false });
  assert.deepEqual(legacyClean({ pageBreaks: true }), { pageBreaks: true });
  assert.equal(legacyClean('junk'), 'junk');
});

test('cleanText controlChars leaves printable non-ASCII characters alone', () => {
  const input = 'ünï 中文 😀 \u00a0nbsp';
  assert.equal(cleanText(input, { ...ALL_OFF, controlChars: true }), input);
});

test('cleanText collapseBlankLines turns runs of blank lines, even ones holding spaces, into one blank line', () => {
  assert.equal(cleanText('a\n\n\nb', { ...ALL_OFF, collapseBlankLines: true }), 'a\n\nb');
  assert.equal(cleanText('a\n  \n\t\n\n\nb', { ...ALL_OFF, collapseBlankLines: true }), 'a\n\nb');
});

test('cleanText collapseBlankLines keeps a single blank line and single newlines', () => {
  assert.equal(cleanText('a\nb\n\nc', { ...ALL_OFF, collapseBlankLines: true }), 'a\nb\n\nc');
  assert.equal(cleanText('a\n \t\nb', { ...ALL_OFF, collapseBlankLines: true }), 'a\n \t\nb');
});

test('cleanText lowercase lowercases letters of every script that has case', () => {
  assert.equal(cleanText('ÀBC Δ Ж', { ...ALL_OFF, lowercase: true }), 'àbc δ ж');
  assert.equal(cleanText('ÀBC'), 'ÀBC');
});

test('cleanText collapses blank lines that only become blank after CRLF and control characters are handled', () => {
  assert.equal(cleanText('a\r\n\r\n\u0000\r\n\r\nb'), 'a\n\nb');
});

test('cleanText composes characters that removing a control character brings together', () => {
  assert.equal(cleanText('e\u0000\u0301', { ...ALL_OFF, controlChars: true, nfc: true }), '\u00e9');
});

// ---- splitTrainVal ----

test('splitTrainVal puts the last tenth of the tokens in validation by default', () => {
  const tokens = Int32Array.from({ length: 100 }, (_, i) => i);
  const { train, val } = splitTrainVal(tokens);
  assert.deepEqual([...train], [...tokens.subarray(0, 90)]);
  assert.deepEqual([...val], [...tokens.subarray(90)]);
});

test('splitTrainVal returns views of the input buffer, not copies', () => {
  const tokens = new Int32Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  const { train, val } = splitTrainVal(tokens, 0.2);
  assert.equal(train.buffer, tokens.buffer);
  assert.equal(val.buffer, tokens.buffer);
  assert.deepEqual([...val], [9, 10]);
});

test('splitTrainVal accepts a plain number array', () => {
  const { train, val } = splitTrainVal([5, 6, 7, 8], 0.25);
  assert.ok(train instanceof Int32Array && val instanceof Int32Array);
  assert.deepEqual([...train], [5, 6, 7]);
  assert.deepEqual([...val], [8]);
});

test('splitTrainVal with a fraction of 0 puts everything in training', () => {
  const { train, val } = splitTrainVal([1, 2, 3], 0);
  assert.equal(train.length, 3);
  assert.equal(val.length, 0);
});

test('splitTrainVal rejects a fraction outside [0, 1)', () => {
  for (const bad of [-0.1, 1, 1.5, Number.NaN]) {
    assert.throws(() => splitTrainVal([1, 2, 3], bad), (err: unknown) => err instanceof MinigptError && /out of range/.test(err.message));
  }
});
