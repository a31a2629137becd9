"""BERT word-piece tokenization of prompts for the LDM text encoder, like diffusers' LDM pipeline does it.

`LDMTextToImagePipeline` calls `BertTokenizer(prompts, padding="max_length", max_length=77,
truncation=True)`: `[CLS] word pieces [SEP]`, truncated to 77 and padded with `[PAD]`. Calling an
`LDMBertTokenizer` does the same in plain Python (`word_piece.PythonWordPiece`), so text-to-image runs on a
JAX + CUDA or PyTorch host without TensorFlow, and loading a preset imports neither TensorFlow nor
keras-hub. The SavedModel export tokenizes inside its graph with core TensorFlow ops
(`keras_ldm.export_tokenizer`, no TensorFlow Text): the same ids (tested).
"""

import unicodedata

import keras
import numpy as np
from keras import ops

from keras_ldm.models.word_piece import PythonWordPiece

SEQUENCE_LENGTH = 77
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
REQUIRED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def read_vocabulary(vocabulary):
    """The word pieces of a vocabulary file (one a line, id = line number) or list, as a list.

    Example:
    >>> read_vocabulary(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "red"])[-1]
    'red'
    """
    if isinstance(vocabulary, str):
        with open(vocabulary, encoding="utf-8") as f:
            pieces = [line.rstrip("\n") for line in f]
        return pieces[:-1] if pieces and pieces[-1] == "" else pieces
    if isinstance(vocabulary, (list, tuple)) and all(isinstance(piece, str) for piece in vocabulary):
        return list(vocabulary)
    raise TypeError(
        f"`vocabulary` must be the path of a vocab.txt file or a list of word pieces; got "
        f"{type(vocabulary).__name__}."
    )


def clean_text(text):
    """Drops control characters and maps every whitespace character to a space (BERT's `_clean_text`).

    Example:
    >>> clean_text("a\\tred\\x07 circle")
    'a red circle'
    """
    kept = []
    for char in text:
        if char in "\t\n\r" or unicodedata.category(char) == "Zs":
            kept.append(" ")
        elif ord(char) not in (0, 0xFFFD) and not unicodedata.category(char).startswith("C"):
            kept.append(char)
    return "".join(kept)


def word_vocabulary(texts):
    """A whole-word vocabulary for `LDMBertTokenizer`: the special tokens, then every word of `texts`
    (lower-cased, accents stripped, punctuation split off, as the tokenizer splits them), sorted.

    Example:
    >>> word_vocabulary(["A red circle.", "a blue one"])[len(SPECIAL_TOKENS):]
    ['.', 'a', 'blue', 'circle', 'one', 'red']
    """
    splitter = PythonWordPiece(list(SPECIAL_TOKENS), True, True, list(SPECIAL_TOKENS))
    words = {word for text in texts for word in splitter.words(clean_text(text))}
    return [*SPECIAL_TOKENS, *sorted(words - set(SPECIAL_TOKENS))]


def _as_prompts(prompts):
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, (list, tuple)) and prompts and all(isinstance(p, str) for p in prompts):
        return list(prompts)
    raise TypeError(f"`prompts` must be a str or a non-empty list of str; got {prompts!r:.80}.")


@keras.saving.register_keras_serializable(package="keras_ldm")
class LDMBertTokenizer:
    """Prompts -> int32 token ids `(B, sequence_length)`: `[CLS] pieces [SEP] [PAD]...`, truncated.

    Matches `transformers.BertTokenizer(vocab)(prompts, padding="max_length", max_length=77,
    truncation=True)["input_ids"]`, which is what diffusers' `LDMTextToImagePipeline` feeds the
    text encoder. `[MASK]` (and the other special tokens) written in a prompt stay single tokens.

    Args:
        vocabulary: path of a `vocab.txt` file (one word piece a line) or a list of word pieces;
            it must hold `[PAD]`, `[UNK]`, `[CLS]` and `[SEP]`.
        sequence_length: length of every output row (LDM: 77).
        lowercase: lower-case the text first (BERT uncased).
        strip_accents: remove accents; None follows `lowercase`, as in transformers.

    Example:
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "red", "circle", "##s"]
    >>> tokenizer = LDMBertTokenizer(vocab, sequence_length=8)
    >>> keras.ops.convert_to_numpy(tokenizer(["A red circles!", "blue"])).tolist()
    [[2, 4, 5, 6, 7, 1, 3, 0], [2, 1, 3, 0, 0, 0, 0, 0]]
    """

    def __init__(self, vocabulary, sequence_length=SEQUENCE_LENGTH, lowercase=True, strip_accents=None):
        pieces = read_vocabulary(vocabulary)
        missing = [token for token in REQUIRED_TOKENS if token not in pieces]
        if missing:
            raise ValueError(
                f"`vocabulary` lacks the special tokens {missing}; BERT needs {list(REQUIRED_TOKENS)}."
            )
        if not isinstance(sequence_length, int) or sequence_length < 2:
            raise ValueError(
                f"`sequence_length` must be an int >= 2 (room for [CLS] and [SEP]); got {sequence_length!r}."
            )
        self.vocabulary = vocabulary
        self.sequence_length = sequence_length
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.pieces = pieces
        self.python_word_piece = self._build_python(pieces)

    def _build_python(self, pieces):
        special = [token for token in SPECIAL_TOKENS if token in pieces]
        strip_accents = self.lowercase if self.strip_accents is None else self.strip_accents
        return PythonWordPiece(pieces, self.lowercase, strip_accents, special)

    @property
    def vocabulary_size(self):
        return len(self.pieces)

    def token_to_id(self, token):
        """The id of a word piece, e.g. `token_to_id("[PAD]")`."""
        return self.pieces.index(token)

    def __call__(self, prompts):
        """`prompts` (a str or a list of str) -> int32 token ids `(B, sequence_length)`."""
        prompts = [clean_text(prompt) for prompt in _as_prompts(prompts)]
        return ops.convert_to_tensor(self._pack([self.python_word_piece(prompt) for prompt in prompts]))

    def _pack(self, rows):
        """`[CLS] ids [SEP] [PAD]...`, truncated to `sequence_length` (keras-hub's `StartEndPacker`)."""
        start, end, pad = (self.token_to_id(token) for token in ("[CLS]", "[SEP]", "[PAD]"))
        packed = np.full((len(rows), self.sequence_length), pad, dtype="int32")
        for row, ids in enumerate(rows):
            ids = [start, *ids[: self.sequence_length - 2], end]
            packed[row, : len(ids)] = ids
        return packed

    def get_config(self):
        return {
            "vocabulary": self.vocabulary,
            "sequence_length": self.sequence_length,
            "lowercase": self.lowercase,
            "strip_accents": self.strip_accents,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
