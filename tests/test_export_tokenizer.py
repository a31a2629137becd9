"""The SavedModel's tokenizer (`keras_ldm.export_tokenizer.GraphTokenizer`): core TensorFlow ops only,
and the ids of `LDMBertTokenizer`'s Python path (the ids `generate()` feeds the text encoder).

Checked on a corpus of 3,000 prompts (vocabulary words in any case, unknown words, punctuation,
accents precomposed and decomposed, Greek final sigma, Turkish İ, German ß, CJK, Hangul, emoji,
control characters, white space of every kind, words of 100 and more characters, special tokens,
random code points), on every assigned code point in several contexts, and with `hypothesis`; and
against transformers' `BertTokenizer` where that one (transformers 5: the Rust `tokenizers`) follows
the Python reference (it lower-cases `Σ` without the final-sigma rule, skips NFC and knows a newer
Unicode version). Only TensorFlow is needed; runs on the backends that export (jax, tensorflow).
"""

import os
import random
import string
import unicodedata

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_ldm.export_tokenizer import PLACEHOLDER, GraphTokenizer
from keras_ldm.models.tokenizer import SPECIAL_TOKENS, LDMBertTokenizer, clean_text

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() not in ("jax", "tensorflow"),
    reason="export runs on the jax and tensorflow backends",
)

SETTINGS = [(True, None), (False, None), (True, False), (False, True)]  # (lowercase, strip_accents)
WORDS = (
    "a an the red blue green circle square on of in background paint photo big small cat dog house "
    "tree sky cafe naive uber zurich resume over under with and or at by painting"
).split()
CHARACTERS = (
    string.ascii_lowercase + string.digits + string.punctuation + "ßıσςαβγδεζηθικλμνξοπρτυφχψω"
    "абвгдежзийклмнопрстуфхцчшщъыьэюяéüåø中国人日本语红花猫犬한국어¿¡«»—…’“”€"
)
VOCABULARY = list(
    dict.fromkeys(
        [*SPECIAL_TOKENS, *WORDS, "##s", "##ing", "##ed", "##er", "##e", "i̇", "ss", "οδος", "ἀ"]
        + [piece for char in CHARACTERS for piece in (char, "##" + char)]
    )
)
ODD = [
    "é", "É", "ü", "Ü", "Å", "å", "ñ", "Ç", "İ", "ı", "ß", "ẞ", "Σ", "σ", "ς", "ΟΔΟΣ", "ΣΑΣ", "Σ.",
    "ΑΣ'Σ", "A\u0345Σ", "Ἀ", "ǅ", "ﬁ", "e\u0301", "E\u0301\u0323", "\u0301", "한", "\u1112\u1161\u11ab",
    "中", "日本", "𠀀", "㐀", "😀", "👍🏽", "🏳️‍🌈", "\u200d", "\ufeff", "\x00", "\x07", "\x1b", "\x7f",
    "\t", "\n", "\r", "\u00a0", "\u2028", "\u3000", "\ufffd", "\ue000", "\U000f0000", "\ud800", "!", "?",
    ",", ".", "'", "-", "(", ")", "[MASK]", "[mask]", "[SEP]", "[UNK", "##", "##s", "№", "½", "²", "Ⅻ",
    "℃", "™", "ㄱ", "\u0f73", "\u0344", "\u1bf2\U00016ff1", "Ωμέγα", "Straße", "İstanbul",
]  # fmt: skip


def corpus(count=3000, seed=0):
    rng = random.Random(seed)
    texts = ["", " ", "\t\n", "[MASK]", "x" * 100, "x" * 101, "a" * 250]
    while len(texts) < count:
        parts = []
        for _ in range(rng.randint(0, 14)):
            roll = rng.random()
            if roll < 0.4:
                word = rng.choice(WORDS)
                word = rng.choice([word, word.upper(), word.title(), word + rng.choice(["s", "ing", "zz"])])
            elif roll < 0.55:
                word = "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(1, 12)))
            elif roll < 0.85:
                word = rng.choice(ODD)
            elif roll < 0.9:
                word = rng.choice(string.ascii_lowercase) * rng.randint(95, 130)
            else:
                word = "".join(chr(rng.randint(0x20, 0x2FFFF)) for _ in range(rng.randint(1, 6)))
            parts += [word, rng.choice([" ", " ", " ", "", "\t", "  ", ",", "\n"])]
        texts.append("".join(parts))
    return texts


CORPUS = corpus()


def as_bytes(texts):
    return tf.constant([text.encode("utf-8", "surrogatepass") for text in texts])  # lone surrogates too


def python_ids(tokenizer, texts):
    """`LDMBertTokenizer.__call__` without the backend tensor (any backend runs this file)."""
    word_piece = tokenizer.python_word_piece
    return tokenizer._pack([word_piece(clean_text(text)) for text in texts])


def python_words(tokenizer, text):
    """`PythonWordPiece`'s words, special tokens as the graph's placeholders."""
    word_piece, words = tokenizer.python_word_piece, []
    for index, part in enumerate(word_piece.special.split(clean_text(text))):
        words += [chr(PLACEHOLDER + SPECIAL_TOKENS.index(part))] if index % 2 else word_piece.words(part)
    return words


def graph(lowercase=True, strip_accents=None):
    """The graph tokenizer's ids and words, as `tf.function`s of a batch of unknown size."""
    tokenizer = GraphTokenizer(VOCABULARY, 77, lowercase, strip_accents)
    spec = [tf.TensorSpec([None], tf.string)]
    return tf.function(tokenizer, input_signature=spec), tf.function(tokenizer.words, input_signature=spec)


@pytest.fixture(scope="module")
def uncased():
    return graph()


def assert_same_ids(tokenize, reference, texts):
    ids = tokenize(as_bytes(texts)).numpy()
    assert ids.dtype == np.int32 and ids.shape == (len(texts), 77)
    different = [texts[i] for i in np.flatnonzero((ids != python_ids(reference, texts)).any(axis=1))]
    assert not different, different[:5]
    return ids


def test_ids_equal_the_python_tokenizer_on_a_corpus(uncased):
    ids = assert_same_ids(uncased[0], LDMBertTokenizer(VOCABULARY), CORPUS)
    assert (ids > VOCABULARY.index("[MASK]")).sum() > 10 * len(CORPUS)  # mostly known pieces


def test_words_of_every_code_point_in_context(uncased):
    """Every assigned code point (a sample of the CJK and Hangul blocks) alone, inside a word, after and
    before a capital sigma and doubled: the same words as the Python tokenizer."""
    reference = LDMBertTokenizer(VOCABULARY)
    codes = [c for c in range(0x110000) if unicodedata.category(chr(c)) not in ("Cn", "Co", "Cs")]
    codes = [c for c in codes if not (unicodedata.name(chr(c), "").startswith(("CJK", "HANGUL")) and c % 16)]
    texts = [f"{c} a{c}b A{c}Σ Σ{c} {c}{c}" for c in map(chr, codes)]
    words = [[w.decode() for w in row] for row in uncased[1](as_bytes(texts)).to_list()]
    different = [text for text, row in zip(texts, words) if row != python_words(reference, text)]
    assert len(texts) > 40_000 and not different, different[:5]


def test_combining_sequences_and_nfc_in_every_setting(uncased):
    """Marks in every order after bases, Hangul jamo, composition exclusions: NFC (without accent
    stripping), canonical ordering and accent stripping as the Python tokenizer does them; and the
    corpus in the cased and accent-keeping settings."""
    rng = random.Random(1)
    marks = list(range(0x300, 0x370)) + [0x345, 0x1BF2, 0x16FF0, 0x1D165, 0x1D170, 0x0F71, 0x0F72]
    marks += [0x0F73, 0x0F74, 0x0344, 0x0B3E, 0x0CD5, 0x302A, 0x3099, 0x093C, 0x05B0, 0x0651, 0x0670]
    marks += list(range(0x1161, 0x1176, 3)) + list(range(0x11A8, 0x11C3, 3))
    bases = [ord(c) for c in "aeiouAEIOUnNcCsSΣσΑΩωιΙİIıǅ"]
    bases += [0xE9, 0x1E9B, 0x0B47, 0x0CC6, 0x1100, 0x1107, 0xAC00]
    # long runs too: the composition takes a few rounds over the whole text, not one step a character
    texts = ["a" + "\u0301\u0323" * 3000, "\u1100\u1161\u11a8\u1161\u11a8" * 800, "\u1161" * 5000]
    for _ in range(3000):
        text = [chr(rng.choice(bases if rng.random() < 0.4 else marks)) for _ in range(rng.randint(1, 8))]
        texts.append("".join(text) + " " + rng.choice(["", "Σ", "ΑΣ", "x"]) + "".join(text))
    for lowercase, strip_accents in SETTINGS:
        reference = LDMBertTokenizer(VOCABULARY, lowercase=lowercase, strip_accents=strip_accents)
        default = (lowercase, strip_accents) == (True, None)
        tokenize, words = uncased if default else graph(lowercase, strip_accents)
        if tokenize is not uncased[0]:
            assert_same_ids(tokenize, reference, CORPUS[:600])
        got = [[w.decode() for w in row] for row in words(as_bytes(texts)).to_list()]
        different = [text for text, row in zip(texts, got) if row != python_words(reference, text)]
        assert not different, (lowercase, strip_accents, different[:5])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.text(max_size=30),
            st.sampled_from(WORDS + ODD).map(lambda word: word.upper()),
            st.text(st.sampled_from(CHARACTERS + "ΣİÉ\u0301\t [MASK]"), max_size=120),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_ids_equal_the_python_tokenizer_for_any_text(uncased, texts):
    texts = [text.encode("utf-8", "replace").decode() for text in texts]
    expected = python_ids(LDMBertTokenizer(VOCABULARY), texts)
    np.testing.assert_array_equal(uncased[0](as_bytes(texts)).numpy(), expected)


def test_ids_equal_transformers_where_it_follows_the_python_reference(uncased, tmp_path):
    """transformers 5's BertTokenizer on the corpus prompts without what it does differently
    (final sigma, NFC, code points unassigned in this Python's Unicode or private-use)."""
    transformers = pytest.importorskip("transformers")

    def ordinary(text):
        return unicodedata.is_normalized("NFC", text) and "Σ" not in text and not any(
            unicodedata.category(char) in ("Cn", "Co", "Cs") or ord(char) > 0xFFFF for char in text
        )

    texts = [text for text in CORPUS if ordinary(text)]
    (tmp_path / "vocab.txt").write_text("\n".join(VOCABULARY) + "\n", encoding="utf-8")
    reference = transformers.BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=True)
    expected = reference(texts, padding="max_length", max_length=77, truncation=True)["input_ids"]
    assert len(texts) > 1000
    np.testing.assert_array_equal(uncased[0](as_bytes(texts)).numpy(), np.array(expected))


def test_saved_model_with_the_tokenizer_loads_and_tokenizes(uncased, tmp_path):
    tokenizer = GraphTokenizer(VOCABULARY, 8)
    module = tf.Module()
    module.tokenize = tf.function(tokenizer, input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures={"serving_default": module.tokenize})
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    texts = ["A Red CIRCLE!", "", "ΟΔΟΣ [MASK] straße"]
    expected = python_ids(LDMBertTokenizer(VOCABULARY, sequence_length=8), texts)
    np.testing.assert_array_equal(loaded.tokenize(as_bytes(texts)).numpy(), expected)
    assert loaded.tokenize(tf.constant([], tf.string)).shape == (0, 8)
    graph_def = module.tokenize.get_concrete_function().graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    ops |= {node.op for function in graph_def.library.function for node in function.node_def}
    assert "StringToHashBucketFast" in ops
    assert not ops & {"NormalizeUTF8", "RegexSplitWithOffsets", "WordpieceTokenizeWithOffsets", "CaseFoldUTF8"}
    assert os.path.exists(tmp_path / "saved" / "saved_model.pb")
