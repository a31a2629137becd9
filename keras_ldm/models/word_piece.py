"""BERT word-piece tokenization in plain Python, for hosts without TensorFlow (a JAX + CUDA or PyTorch box).

`LDMBertTokenizer` tokenizes with `PythonWordPiece` (the SavedModel export with its graph twin,
`keras_ldm.export_tokenizer`), which follows
`transformers.BertTokenizer` step by step: clean the text (done by the caller), keep special tokens such
as `[MASK]` whole, space out CJK characters, lower-case and strip accents, split on whitespace and
punctuation, then greedy longest-match-first word pieces (`##` continuations; a word that cannot be
covered, or is longer than 100 characters, becomes `[UNK]`).
"""

import re
import unicodedata

MAX_WORD_CHARACTERS = 100
CONTINUATION = "##"


def is_punctuation(char):
    """BERT's punctuation: the ASCII symbol ranges and every Unicode category P*."""
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def is_cjk(code):
    """Whether a code point is a CJK ideograph, which BERT splits off as a word of its own."""
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2B73F
        or 0x2B740 <= code <= 0x2B81F
        or 0x2B820 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


def _strip_accents(text):
    return "".join(char for char in unicodedata.normalize("NFD", text) if unicodedata.category(char) != "Mn")


def _split_punctuation(word):
    pieces, current = [], ""
    for char in word:
        if is_punctuation(char):
            pieces += [current, char] if current else [char]
            current = ""
        else:
            current += char
    return pieces + [current] if current else pieces


class PythonWordPiece:
    """Text -> word-piece ids, like `transformers.BertTokenizer` (without [CLS]/[SEP] or padding).

    Args:
        pieces: the vocabulary as a list (id = position); must hold `[UNK]`.
        lowercase: lower-case the text first.
        strip_accents: remove accents (NFD, then drop the combining marks).
        special_tokens: tokens kept whole where they appear in the text (as written, case included).

    Example:
    >>> word_piece = PythonWordPiece(["[UNK]", "[MASK]", "a", "red", "circle", "##s", "!"], True, True, ["[MASK]"])
    >>> word_piece("A red [MASK] circles!"), word_piece("Zebra")
    ([2, 3, 1, 4, 5, 6], [0])
    """

    def __init__(self, pieces, lowercase, strip_accents, special_tokens):
        self.ids = {piece: index for index, piece in reversed(list(enumerate(pieces)))}  # first wins
        self.unknown = self.ids["[UNK]"]
        self.lowercase, self.strip_accents = lowercase, strip_accents
        self.special = (
            re.compile("(" + "|".join(map(re.escape, special_tokens)) + ")") if special_tokens else None
        )

    def __call__(self, text):
        ids = []
        for index, part in enumerate(self.special.split(text) if self.special else [text]):
            if index % 2:  # a special token, matched by the split pattern
                ids.append(self.ids[part])
            else:
                ids += [i for word in self.words(part) for i in self.word_pieces(word)]
        return ids

    def words(self, text):
        """Whitespace- and punctuation-separated words, CJK characters each a word of its own."""
        text = "".join(
            f" {char} " if is_cjk(ord(char)) else char for char in unicodedata.normalize("NFC", text)
        )
        words = []
        for word in text.split():
            if self.lowercase:
                word = word.lower()
            if self.strip_accents:
                word = _strip_accents(word)
            words += _split_punctuation(word)
        return words

    def word_pieces(self, word):
        """Greedy longest-match-first pieces of one word; `[UNK]` when they cannot cover it."""
        if len(word) > MAX_WORD_CHARACTERS:
            return [self.unknown]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else CONTINUATION + word[start:end]
                if piece in self.ids:
                    ids.append(self.ids[piece])
                    start = end
                    break
            else:
                return [self.unknown]
        return ids
