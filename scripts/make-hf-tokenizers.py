#!/usr/bin/env python3
"""Writes BPE tokenizers made by Hugging Face `tokenizers`, and the ids it gives (dev-only).

Two tokenizers, trained on a synthetic corpus made here (so the run is repeatable and offline),
laid out as real Hugging Face models have them and unlike minigpt's own BPE:
  smollm-style  digits one by one, then GPT-2's ByteLevel regex; special tokens first (ids 0-2),
                as SmolLM's tokenizer has them
  gpt2-style    GPT-2's ByteLevel regex; ignore_merges on (a pre-token that is a whole token is
                taken as it is, as Llama 3's tokenizer does) and a token only that makes; special
                tokens added after training

Two with Qwen2's and Llama 3's split (hf-bpe; make-hf-tokenizers.py split-fixture writes
test/fixtures/hf-bpe-split.json):
  qwen2-style   Qwen2's Split regex before a ByteLevel without its own, NFC normalizer; added
                tokens that are not special after the special ones ("<tool_call>", as Qwen2.5's)
  llama3-style  Llama 3's Split regex (digits in threes), ignore_merges and a token only that makes

Three SentencePiece-style ones (sp-bpe), trained the same way, their vocabularies laid out as
Llama 2's ("<unk>", "<s>", "</s>", the 256 byte tokens "<0x00>".."<0xFF>", then the pieces), few
characters of their own so that byte fallback and the unknown token are met often:
  llama-style      Llama 2's legacy layout: normalizer Prepend("▁") + Replace(" ", "▁"), byte
                   fallback, a post-processor that starts every text with "<s>", no piece holding a
                   line break (a byte token, as in Llama 2's vocabulary), merges as transformers'
                   converter lists them (every split of a piece)
  metaspace-first  a Metaspace pre-tokenizer, prepend_scheme "first", split off, byte fallback
  metaspace-unk    a Metaspace pre-tokenizer, prepend_scheme "always", split on, no byte fallback:
                   the unknown token, runs of unknown characters fused into one

Usage:
  make-hf-tokenizers.py fixture OUT.json      both byte-level tokenizer.json texts, the test strings
                                              and tokenizers' ids for them (test/fixtures/hf-bpe.json)
  make-hf-tokenizers.py sp-fixture OUT.json   the same for the SentencePiece-style ones
                                              (test/fixtures/sp-bpe.json)
  make-hf-tokenizers.py encode TOKENIZER.json TEXTS.json OUT.json
                                              tokenizers' ids (special tokens split out, no
                                              template) for each text: test/hf-bpe.test.ts
                                              fuzzes minigpt against it when the venv is there
  make-hf-tokenizers.py pretokenize TOKENIZER.json TEXTS.json OUT.json
                                              its pre-tokenizer's pieces of each text (no
                                              normalizer, no special tokens; byte-level strings)
"""
import json
import random
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

WORDS = ("the of and to in is was he for it with as his on be at by had are but from or have an they which one "
         "you were her all she there would their we him been has when who will more no if out so said what up its "
         "about into than them can only other new some could time these two may then do first any my now such like "
         "our over man me even most made after also did many before must through back years where much your way "
         "well down should because each just those people Mr how too little state good very make world still own "
         "see men work long get here between both life being under never day same another know while last might "
         "naïve café Straße über résumé Ελληνικά русский 日本語 中文 한국어 العربية עברית हिन्दी").split()
PUNCT = list(".,;:!?'\"()[]{}-–—…/\\@#$%^&*_+=<>|~`")
NUMBERS = ["0", "7", "42", "365", "2024", "3.14159", "1,000,000", "٣٤٥", "½", "Ⅻ", "²", "𝟙𝟚"]
SPACES = [" ", " ", " ", "  ", "\t", "\n", "\n\n", "\r\n", "\u00a0", "\u2028", "\u0085", "\u3000"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE"]
EMOJI = ["🙂", "👍🏽", "🇫🇷", "👨‍👩‍👧", "❤️"]

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus(rng: random.Random, n: int) -> list:
    lines = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(4, 30)):
            r = rng.random()
            if r < 0.7:
                w = rng.choice(WORDS)
                parts.append(w.capitalize() if rng.random() < 0.1 else w)
            elif r < 0.8:
                parts.append(rng.choice(NUMBERS))
            elif r < 0.9:
                parts.append(rng.choice(PUNCT))
            elif r < 0.95:
                parts.append(rng.choice(CONTRACTIONS))
            else:
                parts.append(rng.choice(EMOJI))
            parts.append(" " if rng.random() < 0.85 else rng.choice(SPACES))
        # Indented lines, as code has them: the vocabulary learns runs of spaces.
        indent = " " * rng.choice([0, 0, 2, 4, 8])
        lines.append(indent + "".join(parts))
    return lines


def smollm_style(lines: list) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer)
    return tok


def gpt2_style(lines: list) -> Tokenizer:
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer)
    # A token no merge makes (Llama 3's vocabulary, converted from tiktoken, has such): only
    # ignore_merges' whole-word lookup produces it.
    spec = json.loads(tok.to_str())
    spec["model"]["vocab"]["Ġzqxj"] = len(spec["model"]["vocab"])
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.add_special_tokens(["<|endoftext|>"])
    return tok


QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"""
               r"""\s+(?!\S)|\s+""")
LLAMA3_SPLIT = QWEN2_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")


def split_style(lines: list, layout: str) -> Tokenizer:
    """Qwen2's layout ("qwen2-style") or Llama 3's ("llama3-style"), see the module docstring."""
    qwen = layout == "qwen2-style"
    tok = Tokenizer(models.BPE(ignore_merges=not qwen))
    if qwen:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT if qwen else LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=not qwen, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=800, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # Lines joined in pairs by punctuation and a line break, which these regexes join into one pre-token.
    texts = [lines[i].rstrip() + ".!?:;,"[i % 6] + ("\r\n" if i % 3 == 0 else "\n") + lines[i + 1] for i in range(0, len(lines) - 1, 2)]
    tok.train_from_iterator(texts, trainer)
    spec = json.loads(tok.to_str())
    spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    if qwen:
        spec["model"]["continuing_subword_prefix"] = ""
        spec["model"]["end_of_word_suffix"] = ""
    else:
        spec["model"]["vocab"]["Ġzqxj"] = len(spec["model"]["vocab"])
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"] if qwen else ["<|begin_of_text|>", "<|end_of_text|>"])
    if qwen:
        # Added tokens that are not special, as Qwen2.5 has: the library finds them in any text.
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<tool_call>", "</tool_call>", "<|fim_prefix|>")])
    return tok


# Hard strings for the Qwen2 and Llama 3 regexes: contractions in any case (and "ſ", which
# Oniguruma's case folding takes for "s"), punctuation before line breaks, CR and LF runs,
# trailing whitespace, digits of other scripts, mixed scripts, astral characters.
SPLIT_STRINGS = [
    "It's IT'S it'S we'RE they'Ve I'M you'LL he'D", "'ſ 'ſt x'ſt x'ſ It'ſs Kelvin x'Kx x'kx", "don't''s '''",
    "end.\nnext", "end.\r\nnext", "end!?\n\n\nnext", "a.\r\n\r\n  b", "x;\r\r\n", "..\n..\n", " .\n",
    "line\n  indented\n\tTab", "trailing  ", "trailing \n", "trailing\n  ", "  \n  \n  x", "\r\n\r\n",
    "1234567 12 123 1234 ٣٤٥٦ १२३४ ๑๒๓๔๕ ½¾ Ⅻ² 𝟙𝟚𝟛𝟜", "x2024y 3.14159 1,000,000", "a1b22c333d4444",
    "$hello #tag @user (paren) [x] {y}", "\u00a0word\u3000word\u2028word\u0085word", "\ufeffbom",
    "mixed日本語text한국어русскийעברית", "e\u0301 cafe\u0301 A\u030a \u1100\u1161", "emoji🙂text 👍🏽👍🏽 🇫🇷🇫🇷",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐐀𐐁", "-->\n<!--", "tab\t\tx", "  ", "\n", ".", "'", "zqxj Zqxj  zqxj",
    "<|im_start|>user\nHi!<|im_end|>\n", "<|begin_of_text|>x<|end_of_text|>",
    '<tool_call>{"name": "f"}</tool_call>', "x<tool_call>y <tool_call", "<|fim_prefix|>def f():\n",
    "<tool_call></tool_call><tool_call>", "<|im_start|><tool_call><|im_end|>", "</tool_call>\n\n<tool_call>",
]


SP = "\u2581"


def sp_pieces(lines: list, vocab_size: int, line_breaks: bool) -> tuple:
    """Pieces and merges a BPE learns on words cut before each "▁" (as SentencePiece's BPE sees
    them); without `line_breaks`, none holds a line break (Llama 2's vocabulary has "<0x0A>" for one)."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SP), normalizers.Replace(" ", SP)])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SP, prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, limit_alphabet=70, show_progress=False)
    tok.train_from_iterator(lines, trainer)
    spec = json.loads(tok.to_str())
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    kept = lambda piece: line_breaks or ("\n" not in piece and "\r" not in piece)
    for piece, _ in sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1]):
        if kept(piece):
            vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
    return vocab, [m for m in merges if kept(m[0]) and kept(m[1])]


def converter_merges(vocab: dict) -> list:
    """The merges as transformers' converter writes them for a SentencePiece model (Llama 2's
    tokenizer.json): every split of a piece into two pieces, ordered by the piece they make, then
    by the two pieces' ids (what llama.cpp's SentencePiece tokenizer merges too)."""
    pieces = {p: i for p, i in vocab.items() if i >= 3 + 256}
    found = []
    for piece, pid in pieces.items():
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in pieces and right in pieces:
                found.append((pid, pieces[left], pieces[right], left, right))
    return [(left, right) for _, _, _, left, right in sorted(found)]


def sp_style(lines: list, layout: str) -> Tokenizer:
    vocab, merges = sp_pieces(lines, 700, line_breaks=layout != "llama-style")
    if layout == "llama-style":
        merges = converter_merges(vocab)
    fallback = layout != "metaspace-unk"
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=fallback, fuse_unk=True))
    if layout == "llama-style":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend(SP), normalizers.Replace(" ", SP)])
        tok.decoder = decoders.Sequence([decoders.Replace(SP, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    else:
        scheme, split = ("first", False) if layout == "metaspace-first" else ("always", True)
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SP, prepend_scheme=scheme, split=split)
        tok.decoder = decoders.Metaspace(replacement=SP, prepend_scheme=scheme, split=split)
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    if layout == "llama-style":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", 1)])
    return tok


# SentencePiece-style: spaces around special tokens, "\u2581" typed, runs of unknown characters.
SP_STRINGS = [
    "<s>", "</s>text", "a<s>b", "a<s> b", " <s> ", "text</s>", "▁already ▁▁marked", "ZQXJ zqxj ZZZ",
    "éèê üöä ß",
]


def test_strings(rng: random.Random) -> list:
    fixed = [
        "", "Hello world", "Hello, world! It's 2024 and we're here.", "12345 67890", "3.14159 and 1,000,000",
        "٣٤٥ ½ Ⅻ x² 𝟙𝟚", "naïve café Straße", "日本語のテキスト", "emoji 🙂👍🏽🇫🇷👨‍👩‍👧",
        "tabs\tand\nnewlines\r\nand  spaces   ", "nbsp\u00a0here\u2028line\u0085next\u3000wide", "\ufeffbom",
        "I'll he'S they'RE we've", "<|endoftext|>between<|im_start|>x<|im_end|>", "a" * 200,
        "x" + "0123456789" * 20, "  leading and trailing  ", "\n\n\n", "the the the the the",
        # Runs of spaces before a digit: where splitting digits first changes GPT-2's pre-tokens.
        "a  1 b   22 c    333", "one zqxj two zqx zqxjj",
        # Pre-tokens over 64 bytes: merged with a heap, not by scanning.
        "the" * 40, " " * 100 + "x", "—" * 40, "naïve" * 20, "x\t\t3 end.  4\n\n  7", "page  12  of   300",
    ]
    return fixed + corpus(rng, 40)


def write_fixture(path: str, tokenizers: dict, texts: list, with_start: bool = False) -> None:
    """Each tokenizer's tokenizer.json, the texts and its ids for them (special tokens split out, no
    template; with_start: also the ids with the template, for the first three texts), as one JSON file."""
    out = {}
    for name, tok in tokenizers.items():
        out[name] = {
            "tokenizer": json.loads(tok.to_str()),
            "texts": texts,
            "ids": [tok.encode(t, add_special_tokens=False).ids for t in texts],
        }
        if with_start:
            out[name]["withStart"] = [tok.encode(t).ids for t in texts[:3]]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "fixture":
        lines = corpus(random.Random(1234), 3000)
        write_fixture(sys.argv[2], {name: make(lines) for name, make in (("smollm-style", smollm_style), ("gpt2-style", gpt2_style))},
                      test_strings(random.Random(99)))
    elif len(sys.argv) == 3 and sys.argv[1] == "split-fixture":
        lines = corpus(random.Random(1234), 3000)
        write_fixture(sys.argv[2], {name: split_style(lines, name) for name in ("qwen2-style", "llama3-style")},
                      test_strings(random.Random(99)) + SPLIT_STRINGS)
    elif len(sys.argv) == 3 and sys.argv[1] == "sp-fixture":
        lines = corpus(random.Random(1234), 3000)
        write_fixture(sys.argv[2], {name: sp_style(lines, name) for name in ("llama-style", "metaspace-first", "metaspace-unk")},
                      test_strings(random.Random(99)) + SP_STRINGS, with_start=True)
    elif len(sys.argv) == 5 and sys.argv[1] == "encode":
        tok = Tokenizer.from_file(sys.argv[2])
        with open(sys.argv[3], encoding="utf-8") as f:
            texts = json.load(f)
        ids = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
        with open(sys.argv[4], "w", encoding="utf-8") as f:
            json.dump(ids, f)
    elif len(sys.argv) == 5 and sys.argv[1] == "pretokenize":
        tok = Tokenizer.from_file(sys.argv[2])
        with open(sys.argv[3], encoding="utf-8") as f:
            texts = json.load(f)
        with open(sys.argv[4], "w", encoding="utf-8") as f:
            json.dump([[p for p, _ in tok.pre_tokenizer.pre_tokenize_str(t)] for t in texts], f)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
