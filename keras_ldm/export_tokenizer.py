"""BERT word-piece tokenization inside a TensorFlow graph, with core TensorFlow ops only.

The exported SavedModel (`keras_ldm.export`) tokenizes its `prompts` with `GraphTokenizer`, so that it
loads in any TensorFlow runtime: no TensorFlow Text op library is needed (TF Serving's standard build,
Triton's TensorFlow backend, TF-Java, plain `tf.saved_model.load`). It gives the ids of
`LDMBertTokenizer`'s Python path (`word_piece.PythonWordPiece`, i.e. transformers' `BertTokenizer`):

1. clean: control, format, private-use, surrogate and unassigned characters, NUL and U+FFFD (also
   what invalid UTF-8 decodes to) are dropped; tab, newline, carriage return and every other white
   space become a space;
2. special tokens written in a prompt (`[MASK]`, ...) become one placeholder word each;
3. without accent stripping the text is put in NFC (canonical decomposition, ordering and
   composition, all on code points);
4. every code point is lower-cased (Python's `str.lower`: full mappings such as `İ` -> `i̇`, and the
   final-sigma rule: `Σ` becomes `ς` after a cased letter and not before one) through a table built
   with `unicodedata`; with accent stripping the table gives the NFD, the combining marks are put in
   canonical order and the nonspacing ones (Mn) dropped;
5. CJK ideographs and punctuation (ASCII 33-47, 58-64, 91-96, 123-126 and Unicode P*) become words
   of their own; white space separates the others;
6. each word becomes its greedy longest-match-first word pieces (`##` continuations), or `[UNK]` when
   they cannot cover it or it has more than 100 characters (only the first `sequence_length - 2`
   words of a prompt are looked at: each gives at least one id);
7. `[CLS] pieces [SEP] [PAD]...`, truncated to `sequence_length`.

All of it works on int32 code points (`tf.strings.unicode_decode`) with `tf.searchsorted` over
constant tables built in Python from `unicodedata` at export (so the graph follows the Unicode version
of the exporting Python, as `generate()` does); vocabulary look-ups compare 63-bit string
fingerprints (`tf.strings.to_hash_bucket_fast`), then the strings. The graph has no resources
(tables are constants), so it traces in any `tf.function` and saves with `tf.saved_model.save`; its
time grows linearly with the prompt's length (a few milliseconds for a batch of ordinary prompts).
`tests/test_export_tokenizer.py` checks the ids against the Python path in all four lower-casing /
accent settings (a 3,000-prompt corpus, every code point in context, combining sequences, hypothesis);
no difference is known.

Example:
>>> import tensorflow as tf
>>> tokenizer = GraphTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "red", "circle", "##s", "!"], 9)
>>> tokenizer(tf.constant(["A RED\\tcircles!", "Zebra"])).numpy().tolist()
[[2, 4, 5, 6, 7, 8, 3, 0, 0], [2, 1, 3, 0, 0, 0, 0, 0, 0]]
"""

import functools
import unicodedata

import numpy as np

from keras_ldm.models.word_piece import CONTINUATION, MAX_WORD_CHARACTERS, is_cjk, is_punctuation

CODE_POINTS = 0x110000
SPACE = 0x20
CAPITAL_SIGMA, FINAL_SIGMA = 0x3A3, 0x3C2
# special tokens become these private-use code points (cleaning removes every private-use character
# of the prompt first, so none is ever confused with one written by the user)
PLACEHOLDER = 0xF0000
FINGERPRINT_BUCKETS = 2**63 - 1
KEEP, TO_SPACE, DROP = 0, 1, 2  # what cleaning does to a code point
NEITHER, CASED, CASE_IGNORABLE = 0, 1, 2  # a code point's part in the final-sigma rule


# -- Unicode tables (numpy, built once per setting) --------------------------------------------------


def _ranges(values):
    """A code-point-indexed array as (starts, values) of its runs: value of c = values[searchsorted]."""
    values = np.asarray(values)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(values)) + 1]).astype("int32")
    return starts, values[starts].astype("int32")


def _sparse(mapping):
    """{code point: str} -> sorted keys, and the replacements as flat code points with row splits."""
    keys = sorted(mapping)
    replacements = [[ord(char) for char in mapping[key]] for key in keys]
    splits = np.cumsum([0] + [len(r) for r in replacements]).astype("int32")
    flat = np.array([c for r in replacements for c in r], "int32")
    return np.array(keys, "int32"), flat, splits


@functools.lru_cache(maxsize=None)
def _categories():
    return [unicodedata.category(chr(code)) for code in range(CODE_POINTS)]


@functools.lru_cache(maxsize=None)
def _unicode_tables(lowercase, strip_accents):
    """The constant tables of the graph for one lower-casing / accent-stripping setting (numpy)."""
    categories = _categories()
    clean = np.full(CODE_POINTS, DROP, "int8")
    kept = []
    for code, category in enumerate(categories):
        char = chr(code)
        if code in (9, 10, 13) or category == "Zs":
            clean[code] = TO_SPACE
        elif code not in (0, 0xFFFD) and not category.startswith("C"):
            # white space that is no Zs (U+2028, U+2029) only separates words, as str.split() does
            clean[code] = TO_SPACE if char.isspace() else KEEP
            if not char.isspace():
                kept.append(char)
    tables = {"clean": _ranges(clean)}

    mapping, casing = {}, np.zeros(CODE_POINTS, "int8")
    combining, nonspacing = np.zeros(CODE_POINTS, "int32"), np.zeros(CODE_POINTS, "int8")
    for char in kept:
        code = ord(char)
        combining[code] = unicodedata.combining(char)
        nonspacing[code] = categories[code] == "Mn"
        text = char
        if strip_accents:  # NFD of the lower-cased NFC; the graph then orders the marks and drops Mn
            text = unicodedata.normalize("NFD", unicodedata.normalize("NFC", text))
        if lowercase:
            text = unicodedata.normalize("NFD", text.lower()) if strip_accents else text.lower()
            casing[code] = _casing(char)
        if text != char:
            mapping[code] = text
    tables["mapping"] = _sparse(mapping)
    tables["casing"] = _ranges(casing)
    tables["combining"] = _ranges(combining)
    tables["nonspacing"] = _ranges(nonspacing)

    isolated = np.zeros(CODE_POINTS, "int8")
    for code, category in enumerate(categories):
        isolated[code] = category.startswith("P") or is_punctuation(chr(code)) or is_cjk(code)
    isolated[PLACEHOLDER : PLACEHOLDER + 0x100] = 1
    tables["isolated"] = _ranges(isolated)

    if not strip_accents:
        tables.update(_nfc_tables(kept))
    return tables


def _casing(char):
    """Whether `char` is case-ignorable, cased (and not ignorable) or neither, for Python's final-sigma
    rule (`str.lower` maps `Σ` to `ς` after a cased letter and not before one, skipping ignorables),
    read off `str.lower` itself."""
    before = ("A" + char + "Σ").lower()[-1] == "ς"  # ignorable or cased
    after = ("AΣ" + char).lower()[1] == "ς"  # ignorable or not cased
    if before and after:
        return CASE_IGNORABLE
    return CASED if (char + "Σ").lower()[-1] == "ς" else NEITHER


def _nfc_tables(kept):
    """Canonical decompositions, combining classes and primary compositions, for NFC in the graph."""
    decompositions, pairs = {}, {}
    for char in kept:
        code = ord(char)
        nfd = unicodedata.normalize("NFD", char)
        if nfd != char:
            decompositions[code] = nfd
        mapping = unicodedata.decomposition(char)
        if mapping and not mapping.startswith("<") and len(mapping.split()) == 2:
            first, second = (chr(int(part, 16)) for part in mapping.split())
            if unicodedata.normalize("NFC", first + second) == char:  # not a composition exclusion
                pairs[(ord(first), ord(second))] = code
    for leading in range(0x1100, 0x1113):  # Hangul: L + V -> LV, LV + T -> LVT (no decomposition
        for vowel in range(0x1161, 0x1176):  # mapping names them)
            syllable = ord(unicodedata.normalize("NFC", chr(leading) + chr(vowel)))
            pairs[(leading, vowel)] = syllable
            for trailing in range(0x11A8, 0x11C3):
                pairs[(syllable, trailing)] = ord(unicodedata.normalize("NFC", chr(syllable) + chr(trailing)))
    keys = np.array(sorted(first * CODE_POINTS + second for first, second in pairs), "int64")
    values = np.array([pairs[divmod(int(key), CODE_POINTS)] for key in keys], "int32")
    return {
        "decompositions": _sparse(decompositions),
        "compositions": (keys, values),
    }


def _vocabulary_table(pieces, special_tokens):
    """Sorted fingerprints of the word pieces (first occurrence wins) and placeholders, their strings
    and ids; and the longest piece in characters (without `##`)."""
    import tensorflow as tf

    ids = {}
    for index, piece in enumerate(pieces):
        ids.setdefault(piece, index)
    for number, token in enumerate(special_tokens):
        ids[chr(PLACEHOLDER + number)] = ids[token]
    strings = list(ids)
    with tf.init_scope():  # eager, also when first asked for inside a tf.function
        fingerprints = tf.strings.to_hash_bucket_fast(strings, FINGERPRINT_BUCKETS).numpy()
    order = np.argsort(fingerprints, kind="stable")
    fingerprints = fingerprints[order]
    if len(np.unique(fingerprints)) != len(fingerprints):  # two pieces with one 63-bit fingerprint
        raise ValueError("Two word pieces of the vocabulary have the same fingerprint; cannot export.")
    longest = max(len(s[len(CONTINUATION) :]) if s.startswith(CONTINUATION) else len(s) for s in strings)
    return {
        "fingerprints": fingerprints.astype("int64"),
        "strings": np.array([strings[i].encode("utf-8") for i in order], object),
        "ids": np.array([ids[strings[i]] for i in order], "int32"),
        "longest": min(longest, MAX_WORD_CHARACTERS),
    }


# -- the graph ---------------------------------------------------------------------------------------


def _lookup_ranges(table, codes):
    import tensorflow as tf

    starts, values = table
    index = tf.searchsorted(tf.constant(starts), codes, side="right") - 1
    return tf.gather(tf.constant(values), index)


def _lookup_sparse(keys, codes):
    """(found, index): whether each code is a key, and where."""
    import tensorflow as tf

    keys = tf.constant(keys)
    index = tf.minimum(tf.searchsorted(keys, codes), tf.size(keys) - 1)
    return tf.equal(tf.gather(keys, index), codes), index


def _replace(table, codes, rows):
    """Each code point by its replacement in `table` (zero or more code points), else itself."""
    import tensorflow as tf

    keys, flat, splits = table
    if not keys.size:
        return codes, rows, tf.range(tf.size(codes))
    found, index = _lookup_sparse(keys, codes)
    splits = tf.constant(splits)
    lengths = tf.where(found, tf.gather(splits, index + 1) - tf.gather(splits, index), 1)
    source = tf.repeat(tf.range(tf.size(codes)), lengths)
    offset = tf.range(tf.size(source)) - tf.gather(tf.cumsum(lengths, exclusive=True), source)
    start = tf.gather(tf.gather(splits, index), source)
    if flat.size:
        replaced = tf.gather(tf.constant(flat), tf.maximum(start + offset, 0) % flat.size)
    else:
        replaced = tf.zeros_like(source)
    new = tf.where(tf.gather(found, source), replaced, tf.gather(codes, source))
    return new, tf.gather(rows, source), source


def _first_in_row(rows):
    import tensorflow as tf

    return tf.concat([tf.ones([1], tf.bool)[: tf.size(rows)], tf.not_equal(rows[1:], rows[:-1])], 0)


def _canonical_order(tables, codes, rows):
    """Canonical ordering (of NFD and NFC): the combining marks after each starter, stably sorted by
    combining class (a stable sort by the starter before them, then the class; rows stay in order)."""
    import tensorflow as tf

    combining = _lookup_ranges(tables["combining"], codes)
    starter = _last_true_position(tf.equal(combining, 0) | _first_in_row(rows))
    order = tf.argsort((starter + 1) * 256 + tf.cast(combining, tf.int64), stable=True)
    return tuple(tf.gather(t, order) for t in (codes, rows, combining))


def _nfc(tables, codes, rows):
    """NFC of every row: full canonical decomposition, canonical ordering, canonical composition."""
    import tensorflow as tf

    codes, rows, _ = _replace(tables["decompositions"], codes, rows)
    codes, rows, combining = _canonical_order(tables, codes, rows)
    keys, values = (tf.constant(t) for t in tables["compositions"])

    def decide(deleted, composites):
        """Each character's fate (composed into its starter?) and the starter's code after it, given
        the fates of the characters before it (Unicode's composition algorithm, every position at
        once): from the fates of a round the next round gets the positions after them right."""
        starter = _last_before(~deleted & tf.equal(combining, 0))  # the last kept starter before
        last_kept, last_deleted = _last_before(~deleted), _last_before(deleted)
        has_starter = (starter >= 0) & tf.equal(tf.gather(rows, tf.maximum(starter, 0)), rows)
        last_class = tf.where(last_kept > starter, tf.gather(combining, tf.maximum(last_kept, 0)), 0)
        current = tf.where(  # the starter's code: composed with the characters composed into it so far
            last_deleted > starter,
            tf.gather(composites, tf.maximum(last_deleted, 0)),
            tf.gather(codes, tf.maximum(starter, 0)),
        )
        key = tf.cast(current, tf.int64) * CODE_POINTS + tf.cast(codes, tf.int64)
        index = tf.minimum(tf.searchsorted(keys, key), tf.size(keys) - 1)
        found = tf.equal(tf.gather(keys, index), key)
        unblocked = (last_class < combining) | tf.equal(last_class, 0)
        composes = has_starter & found & unblocked
        return composes, tf.where(composes, tf.gather(values, index), codes), starter

    def changed(deleted, composites, new_deleted, new_composites):
        return tf.reduce_any(tf.not_equal(deleted, new_deleted)) | tf.reduce_any(
            deleted & tf.not_equal(composites, new_composites)
        )

    def body(_, deleted, composites):
        new_deleted, new_composites, _ = decide(deleted, composites)
        return changed(deleted, composites, new_deleted, new_composites), new_deleted, new_composites

    # a position's fate depends only on those before it, so round k gets at least the first k right;
    # in practice three or four rounds settle (a starter composes at most three times)
    state = (tf.constant(True), tf.zeros_like(codes, tf.bool), codes)
    _, deleted, composites = tf.while_loop(
        lambda again, *_: again, body, state, maximum_iterations=tf.size(codes) + 1
    )
    _, _, starter = decide(deleted, composites)
    # each kept starter takes the code after the last character composed into it
    size = tf.size(codes)
    composed_into = tf.where(deleted, starter, size)  # the others: into a segment past the end
    last = tf.math.unsorted_segment_max(tf.where(deleted, tf.range(size), -1), composed_into, size + 1)[:-1]
    codes = tf.where(last >= 0, tf.gather(composites, tf.maximum(last, 0)), codes)
    return tf.boolean_mask(codes, ~deleted), tf.boolean_mask(rows, ~deleted)


def _last_before(flags):
    """For each position, the last position before it where `flags` is true (-1: none)."""
    import tensorflow as tf

    return tf.cast(tf.concat([[-1], _last_true_position(flags)[:-1]], 0)[: tf.size(flags)], tf.int32)


def _last_true_position(flags):
    """For each position, the last position at or before it where `flags` is true (-1: none)."""
    import tensorflow as tf

    true_positions = tf.concat([[-1], tf.where(flags)[:, 0]], 0)  # after the -1: the k-th true one
    return tf.gather(true_positions, tf.cumsum(tf.cast(flags, tf.int32)))


def _final_sigmas(tables, codes, rows):
    """Where a capital sigma ends a word (after a cased letter, not before one, skipping
    case-ignorable characters), as Python's `str.lower` decides it."""
    import tensorflow as tf

    casing = _lookup_ranges(tables["casing"], codes)
    significant = tf.not_equal(casing, CASE_IGNORABLE)
    # the positions of the significant (not ignorable) characters, then one past the end, whose row
    # is none (-1): the neighbour of a character that has none
    positions = tf.concat([tf.cast(tf.where(significant)[:, 0], tf.int32), [tf.size(codes)]], 0)
    rows = tf.concat([rows, [-1]], 0)
    casing = tf.concat([casing, [NEITHER]], 0)
    total = tf.size(positions) - 1
    rank = tf.cumsum(tf.cast(significant, tf.int32), exclusive=True)  # significant ones before
    before = tf.gather(positions, tf.where(rank > 0, rank - 1, total))
    after = tf.gather(positions, tf.minimum(rank + 1, total))

    def cased(neighbour):
        same_row = tf.equal(tf.gather(rows, neighbour), rows[:-1])
        return same_row & tf.equal(tf.gather(casing, neighbour), CASED)

    return tf.equal(codes, CAPITAL_SIGMA) & cased(before) & ~cased(after)


class GraphTokenizer:
    """Prompts (a `tf.string` tensor `(B,)`) -> int32 ids `(B, sequence_length)`, with core TensorFlow
    ops only, as `LDMBertTokenizer` gives them (see the module docstring).

    Args:
        pieces: the vocabulary as a list (id = position); it must hold `[UNK]`, `[CLS]`, `[SEP]`, `[PAD]`.
        sequence_length: length of every output row.
        lowercase: lower-case the text.
        strip_accents: remove accents; None follows `lowercase`.
        special_tokens: tokens kept whole where a prompt writes them (as written, case included; at
            most 256, none overlapping another); None: those of `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`,
            `[MASK]` that are in `pieces`.
    """

    def __init__(self, pieces, sequence_length, lowercase=True, strip_accents=None, special_tokens=None):
        from keras_ldm.models.tokenizer import SPECIAL_TOKENS

        self.pieces = list(pieces)
        self.sequence_length = sequence_length
        self.lowercase = bool(lowercase)
        self.strip_accents = self.lowercase if strip_accents is None else bool(strip_accents)
        if special_tokens is None:
            special_tokens = [token for token in SPECIAL_TOKENS if token in self.pieces]
        self.special_tokens = list(special_tokens)
        if len(self.special_tokens) > 0x100:
            raise ValueError(f"At most 256 special tokens; got {len(self.special_tokens)}.")
        self.ids = {token: self.pieces.index(token) for token in ("[UNK]", "[CLS]", "[SEP]", "[PAD]")}
        self.tables = _unicode_tables(self.lowercase, self.strip_accents)
        self.vocabulary = _vocabulary_table(self.pieces, self.special_tokens)

    @classmethod
    def from_tokenizer(cls, tokenizer):
        """The graph version of an `LDMBertTokenizer`."""
        settings = (tokenizer.sequence_length, tokenizer.lowercase, tokenizer.strip_accents)
        return cls(tokenizer.pieces, *settings)

    def __call__(self, prompts):
        import tensorflow as tf

        words, word_rows, batch = self._words(prompts, limit=self.sequence_length - 2)
        ids, rows = self._word_pieces(words, word_rows)
        ids = tf.RaggedTensor.from_value_rowids(ids, rows, batch, validate=False)
        ids = ids[:, : self.sequence_length - 2]
        column = tf.RaggedTensor.from_tensor(tf.ones([batch, 1], tf.int32))
        ids = tf.concat([column * self.ids["[CLS]"], ids, column * self.ids["[SEP]"]], axis=1)
        return ids.to_tensor(self.ids["[PAD]"], shape=[None, self.sequence_length])

    def words(self, prompts):
        """The words of each prompt (a string `RaggedTensor` `(B, None)`) before word pieces: what
        `PythonWordPiece.words` gives (special tokens are their private-use placeholders here)."""
        import tensorflow as tf

        words, rows, batch = self._words(prompts)
        return tf.RaggedTensor.from_value_rowids(words, rows, batch, validate=False)

    def _words(self, prompts, limit=None):
        """Flat UTF-8 words, their prompt, and the batch size; at most `limit` words a prompt."""
        import tensorflow as tf

        prompts = tf.convert_to_tensor(prompts, tf.string)
        batch = tf.shape(prompts, out_type=tf.int64)[0]
        text = tf.strings.unicode_decode(prompts, "UTF-8", errors="replace")
        codes, rows = text.flat_values, text.value_rowids()
        clean = _lookup_ranges(self.tables["clean"], codes)
        keep = tf.not_equal(clean, DROP)
        codes = tf.where(tf.equal(clean, TO_SPACE), SPACE, codes)
        codes, rows = tf.boolean_mask(codes, keep), tf.boolean_mask(rows, keep)
        if self.special_tokens:  # each written special token: a placeholder word
            text = tf.RaggedTensor.from_value_rowids(codes, rows, batch, validate=False)
            text = tf.strings.unicode_encode(text, "UTF-8")
            for number, token in enumerate(self.special_tokens):
                pattern = "".join(f"\\x{{{ord(char):x}}}" for char in token)
                text = tf.strings.regex_replace(text, pattern, f" {chr(PLACEHOLDER + number)} ")
            text = tf.strings.unicode_decode(text, "UTF-8")
            codes, rows = text.flat_values, text.value_rowids()
        if not self.strip_accents:
            codes, rows = _nfc(self.tables, codes, rows)
        final = _final_sigmas(self.tables, codes, rows) if self.lowercase else None
        codes, rows, source = _replace(self.tables["mapping"], codes, rows)
        if final is not None:
            codes = tf.where(tf.gather(final, source), FINAL_SIGMA, codes)
        if self.strip_accents:  # the mapping gave NFD: order the marks, drop the nonspacing ones
            codes, rows, _ = _canonical_order(self.tables, codes, rows)
            keep = tf.equal(_lookup_ranges(self.tables["nonspacing"], codes), 0)
            codes, rows = tf.boolean_mask(codes, keep), tf.boolean_mask(rows, keep)

        # words: runs of characters between spaces; an isolated character (CJK, punctuation) alone
        space = tf.equal(codes, SPACE)
        isolated = tf.cast(_lookup_ranges(self.tables["isolated"], codes), tf.bool)
        first = _first_in_row(rows)
        follows_break = tf.concat([[True], (space | isolated)[:-1]], 0)[: tf.size(codes)]
        starts = ~space & (isolated | first | follows_break)
        word = tf.cumsum(tf.cast(starts, tf.int64)) - 1
        count = tf.reduce_sum(tf.cast(starts, tf.int64))
        characters = tf.RaggedTensor.from_value_rowids(
            tf.boolean_mask(codes, ~space), tf.boolean_mask(word, ~space), count, validate=False
        )
        word_rows = tf.boolean_mask(rows, starts)
        if limit is not None:  # every word gives at least one id: later words are truncated anyway
            kept = tf.RaggedTensor.from_value_rowids(tf.range(count), word_rows, batch, validate=False)
            kept = kept[:, :limit]
            characters = tf.gather(characters, kept.flat_values)
            word_rows = kept.value_rowids()
        return tf.strings.unicode_encode(characters, "UTF-8"), word_rows, batch

    def _lookup(self, strings):
        """Ids of word pieces; -1 where a string is not in the vocabulary."""
        import tensorflow as tf

        fingerprints = tf.constant(self.vocabulary["fingerprints"])
        hashed = tf.strings.to_hash_bucket_fast(strings, FINGERPRINT_BUCKETS)
        index = tf.minimum(tf.searchsorted(fingerprints, hashed), tf.size(fingerprints) - 1)
        found = tf.equal(tf.gather(fingerprints, index), hashed)
        found &= tf.equal(tf.gather(tf.constant(self.vocabulary["strings"]), index), strings)
        return tf.where(found, tf.gather(tf.constant(self.vocabulary["ids"]), index), -1)

    def _word_pieces(self, words, word_rows):
        """Greedy longest-match-first word pieces of every word at once: each (word, start) slot looks
        up all its substrings of up to `longest` characters; a loop then follows the matches."""
        import tensorflow as tf

        lengths = tf.strings.length(words, unit="UTF8_CHAR")
        too_long = lengths > MAX_WORD_CHARACTERS
        slots = tf.where(too_long, 1, lengths)  # a too long word: one slot, no candidates, [UNK]
        slot_word = tf.repeat(tf.range(tf.size(words)), slots)
        slot_start = tf.cumsum(slots, exclusive=True)
        slot_offset = tf.range(tf.size(slot_word)) - tf.gather(slot_start, slot_word)
        remaining = tf.gather(lengths, slot_word) - slot_offset
        candidates = tf.where(
            tf.gather(too_long, slot_word), 0, tf.minimum(remaining, self.vocabulary["longest"])
        )
        candidate_slot = tf.repeat(tf.range(tf.size(slot_word)), candidates)
        first_candidate = tf.gather(tf.cumsum(candidates, exclusive=True), candidate_slot)
        size = tf.range(tf.size(candidate_slot)) - first_candidate + 1  # characters
        offset = tf.gather(slot_offset, candidate_slot)
        pieces = tf.strings.substr(
            tf.gather(words, tf.gather(slot_word, candidate_slot)), offset, size, unit="UTF8_CHAR"
        )
        pieces = tf.strings.join([tf.where(offset > 0, CONTINUATION, ""), pieces])
        ids = self._lookup(pieces)
        count = tf.size(slot_word)
        best = tf.math.unsorted_segment_max(tf.where(ids >= 0, size, 0), candidate_slot, count)
        best = tf.maximum(best, 0)  # no candidate: 0
        longest_match = (ids >= 0) & tf.equal(size, tf.gather(best, candidate_slot))
        best_id = tf.math.unsorted_segment_max(tf.where(longest_match, ids, -1), candidate_slot, count)

        def body(position, failed, visited):
            active = (position < slots) & ~failed
            slot = slot_start + tf.minimum(position, slots - 1)
            step = tf.gather(best, tf.minimum(slot, tf.maximum(count - 1, 0)))
            advances = active & (step > 0)
            visited = tf.tensor_scatter_nd_update(
                visited, tf.boolean_mask(slot, advances)[:, None], tf.boolean_mask(advances, advances)
            )
            return tf.where(advances, position + step, position), failed | (active & (step <= 0)), visited

        state = (tf.zeros_like(slots), too_long, tf.zeros([count], tf.bool))
        _, failed, visited = tf.while_loop(
            lambda position, failed, _: tf.reduce_any((position < slots) & ~failed),
            body,
            state,
            maximum_iterations=MAX_WORD_CHARACTERS + 1,
        )
        word_failed = tf.gather(failed, slot_word)
        emit = (visited & ~word_failed) | (word_failed & tf.equal(slot_offset, 0))
        ids = tf.where(word_failed, self.ids["[UNK]"], best_id)
        return tf.boolean_mask(ids, emit), tf.gather(word_rows, tf.boolean_mask(slot_word, emit))


@functools.lru_cache(maxsize=8)
def _cached(pieces, sequence_length, lowercase, strip_accents):
    return GraphTokenizer(list(pieces), sequence_length, lowercase, strip_accents)


def graph_tokenizer(tokenizer):
    """The `GraphTokenizer` of an `LDMBertTokenizer` (built once per vocabulary and setting)."""
    settings = (tokenizer.sequence_length, tokenizer.lowercase, tokenizer.strip_accents)
    return _cached(tuple(tokenizer.pieces), *settings)
