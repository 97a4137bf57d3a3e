"""CLIP-compatible byte-level BPE tokenizer used for OneFormer's task token and text queries.

The vocabulary is the CLIP BPE merge list ``bpe_simple_vocab_16e6.txt.gz`` shipped next to this module as
package data. Token ids produced here are identical to OpenAI CLIP's ``SimpleTokenizer`` (and therefore to the
released OneFormer checkpoints): 256 byte symbols, the same 256 symbols with an end-of-word marker, 48894 merges,
then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407), 49408 ids in total.

Public API:

* :class:`SimpleTokenizer` -- ``encode(text) -> list[int]`` (no SOT/EOT) and ``decode(ids) -> str``.
* :class:`Tokenize` -- callable producing fixed-length, zero-padded ``torch.LongTensor`` rows
  ``[SOT, tokens..., EOT, 0, ...]``.
* :func:`task_tokens` -- the 77 token ids of ``"The task is {task}"`` for one of the three OneFormer tasks.
* :func:`get_default_tokenizer` -- a process-wide shared :class:`SimpleTokenizer` built from the bundled vocab.
"""
from __future__ import annotations

import functools
import gzip
import html
import os
import zlib
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import ftfy
import regex
import torch

__all__ = [
    "DEFAULT_BPE_PATH",
    "BPEVocabError",
    "SimpleTokenizer",
    "Tokenize",
    "TASKS",
    "TASK_ALL",
    "is_task_all",
    "task_string",
    "task_tokens",
    "get_default_tokenizer",
    "bytes_to_unicode",
]

#: Path of the bundled CLIP BPE vocabulary (package data, resolved relative to this module).
DEFAULT_BPE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_simple_vocab_16e6.txt.gz")

# Layout of the CLIP vocabulary: 49152 lines of merges in the file are used minus the 256 byte symbols and the
# two special tokens, i.e. 48894 merges; the first line of the file is a version header.
_NUM_MERGES = 49152 - 256 - 2
_SOT = "<|startoftext|>"
_EOT = "<|endoftext|>"
_EOW = "</w>"  # end-of-word marker appended to the last symbol of every word

#: The task names accepted by :func:`task_tokens`.
TASKS = ("semantic", "instance", "panoptic")
#: Not a token: at test time, every task from its own token in one pass (the backbone and pixel decoder run once;
#: panoptic_seg from the panoptic token, instances from the instance token, sem_seg from the semantic token).
TASK_ALL = "all"


def is_task_all(task) -> bool:
    """Whether ``task`` is ``TASK_ALL`` ("all", any case, surrounding blanks ignored)."""
    return isinstance(task, str) and task.strip().lower() == TASK_ALL


def task_string(task: str) -> str:
    """Normalize "panoptic" / "The task is panoptic" (any case) to "The task is panoptic"; ValueError otherwise."""
    if not isinstance(task, str):
        raise ValueError(f"task must be a string, got {type(task).__name__}")
    t = task.strip()
    name = t[len("the task is "):] if t.lower().startswith("the task is ") else t
    name = name.strip().lower()
    if name not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {TASKS} (or 'The task is <task>')")
    return f"The task is {name}"


class BPEVocabError(RuntimeError):
    """Raised when the BPE vocabulary file exists but cannot be read or does not have the CLIP layout."""


@functools.lru_cache(maxsize=None)
def bytes_to_unicode() -> Dict[int, str]:
    """Return the reversible byte -> printable-unicode-character table used by byte-level BPE.

    Takes nothing; returns a dict mapping each of the 256 byte values to a single character. Bytes that are
    already visible, non-space latin-1 characters map to themselves; every other byte (control characters,
    space, soft hyphen, ...) is assigned the next unused code point starting at 256, in increasing byte order.

    The dict's iteration order is part of the contract: the visible bytes come first (ascending), then the
    remapped ones (ascending). The first 256 vocabulary ids follow this order, e.g. ``"!"`` is id 0.
    """
    visible = list(range(ord("!"), ord("~") + 1))
    visible += list(range(ord("\u00a1"), ord("\u00ac") + 1))
    visible += list(range(ord("\u00ae"), ord("\u00ff") + 1))
    hidden = [b for b in range(256) if b not in set(visible)]
    table: Dict[int, str] = {b: chr(b) for b in visible}
    for n, b in enumerate(hidden):
        table[b] = chr(256 + n)
    return table


def _symbol_pairs(word: Sequence[str]) -> set:
    """Return the set of adjacent symbol pairs of ``word`` (a sequence of BPE symbols)."""
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


def _clean(text: str) -> str:
    """Normalize raw text the way CLIP does before BPE.

    Takes a string; returns it with mojibake/unicode repaired by ftfy, HTML entities unescaped (twice, for
    doubly-escaped input), runs of whitespace collapsed to one space, stripped, and lower-cased.
    """
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    text = regex.sub(r"\s+", " ", text.strip())
    return text.strip().lower()


def _read_merges(bpe_path: str) -> List[Tuple[str, str]]:
    """Read the first 48894 merge rules from a CLIP ``.txt.gz`` vocabulary.

    Takes the file path; returns a list of ``(left, right)`` symbol pairs in priority order. Raises
    ``FileNotFoundError`` if the file is missing and :class:`BPEVocabError` (naming the file) if it is not a
    readable gzip text file with enough well-formed merge lines.
    """
    if not os.path.isfile(bpe_path):
        raise FileNotFoundError(
            f"CLIP BPE vocabulary file not found: {bpe_path!r}. It is package data of oneformer.data "
            "(bpe_simple_vocab_16e6.txt.gz); reinstall the package or pass bpe_path explicitly."
        )
    try:
        with gzip.open(bpe_path, "rb") as f:
            lines = f.read().decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as e:
        raise BPEVocabError(f"CLIP BPE vocabulary file {bpe_path!r} is corrupt or not a gzip text file: {e}") from e
    # line 0 is a "#version" header; the merges used by CLIP are the next _NUM_MERGES lines
    body = lines[1 : _NUM_MERGES + 1]
    if len(body) < _NUM_MERGES:
        raise BPEVocabError(
            f"CLIP BPE vocabulary file {bpe_path!r} has only {len(body)} merge lines, expected at least {_NUM_MERGES}"
        )
    merges: List[Tuple[str, str]] = []
    for lineno, line in enumerate(body, start=2):
        parts = line.split()
        if len(parts) != 2:
            raise BPEVocabError(
                f"CLIP BPE vocabulary file {bpe_path!r} line {lineno} is not a merge rule ('a b'): {line!r}"
            )
        merges.append((parts[0], parts[1]))
    return merges


class SimpleTokenizer:
    """CLIP byte-level BPE tokenizer (ids identical to OpenAI CLIP's ``SimpleTokenizer``).

    Args:
        bpe_path: path of the gzip-compressed merge list; defaults to the bundled :data:`DEFAULT_BPE_PATH`.
        cache_size: maximum number of words whose BPE segmentation is memoized (least recently used are evicted).
    """

    def __init__(self, bpe_path: Optional[str] = None, cache_size: int = 100_000):
        self.bpe_path = bpe_path if bpe_path is not None else DEFAULT_BPE_PATH
        merges = _read_merges(self.bpe_path)

        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}

        base = list(self.byte_encoder.values())  # visible bytes first, then the remapped ones (see bytes_to_unicode)
        symbols = base + [s + _EOW for s in base] + [a + b for a, b in merges] + [_SOT, _EOT]
        self.encoder: Dict[str, int] = {s: i for i, s in enumerate(symbols)}
        if len(self.encoder) != len(symbols):
            raise BPEVocabError(f"CLIP BPE vocabulary file {self.bpe_path!r} produces duplicate vocabulary entries")
        self.decoder: Dict[int, str] = {i: s for s, i in self.encoder.items()}
        self.bpe_ranks: Dict[Tuple[str, str], int] = {pair: rank for rank, pair in enumerate(merges)}

        self.sot_token_id = self.encoder[_SOT]
        self.eot_token_id = self.encoder[_EOT]
        self.vocab_size = len(self.encoder)

        # Special tokens are matched whole; words are letter runs, single digits, runs of other non-space
        # characters, and the usual English contractions.
        self.pattern = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self._cache_size = int(cache_size)
        self._cache: "OrderedDict[str, str]" = OrderedDict()
        self._specials = {_SOT: _SOT, _EOT: _EOT}

    # ------------------------------------------------------------------ BPE
    def bpe(self, token: str) -> str:
        """Segment one pre-tokenized word (already mapped to byte-unicode characters) into BPE symbols.

        Takes the word as a string; returns its symbols joined by single spaces, the last one carrying ``</w>``.
        """
        if token in self._specials:
            return self._specials[token]
        cached = self._cache.get(token)
        if cached is not None:
            self._cache.move_to_end(token)
            return cached

        word: List[str] = list(token[:-1]) + [token[-1] + _EOW]
        while len(word) > 1:
            pairs = _symbol_pairs(word)
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            first, second = best
            merged: List[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        out = " ".join(word)

        if self._cache_size > 0:
            self._cache[token] = out
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    # ------------------------------------------------------------------ public API
    def tokenize(self, text: str) -> List[str]:
        """Return the BPE symbols (strings, e.g. ``["pan", "optic</w>"]``) of ``text``, without SOT/EOT."""
        pieces: List[str] = []
        for word in self.pattern.findall(_clean(text)):
            mapped = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            pieces.extend(self.bpe(mapped).split(" "))
        return pieces

    def encode(self, text: str) -> List[int]:
        """Encode ``text`` (a str) into a list of int token ids, without the SOT/EOT markers and without padding."""
        if not isinstance(text, str):
            raise TypeError(f"SimpleTokenizer.encode expects a str, got {type(text).__name__}")
        return [self.encoder[p] for p in self.tokenize(text)]

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> List[str]:
        """Map token ids (iterable of ints or an integer tensor) to their BPE symbol strings."""
        return [self.decoder[int(i)] for i in _as_int_list(ids)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Decode token ids back into text.

        Args:
            ids: iterable of int ids (list, tuple or 1-D integer tensor).
            skip_special_tokens: if True, drop a leading ``<|startoftext|>`` and ignore everything from the first
                ``<|endoftext|>`` on (so padded rows from :class:`Tokenize` decode to their text only).
        Returns:
            the decoded string; word ends (``</w>``) become single spaces, so the result usually ends with a space
            and equals the cleaned, lower-cased input rather than the raw input.
        """
        id_list = _as_int_list(ids)
        if skip_special_tokens:
            if id_list and id_list[0] == self.sot_token_id:
                id_list = id_list[1:]
            if self.eot_token_id in id_list:
                id_list = id_list[: id_list.index(self.eot_token_id)]
        text = "".join(self.decoder[i] for i in id_list)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace(_EOW, " ")

    def __len__(self) -> int:
        return self.vocab_size

    def __getstate__(self):
        # The memo cache can be large; do not ship it to dataloader workers.
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state


def _as_int_list(ids: Iterable[int]) -> List[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"expected a 1-D tensor of token ids, got shape {tuple(ids.shape)}")
        return [int(i) for i in ids.tolist()]
    return [int(i) for i in ids]


@functools.lru_cache(maxsize=None)
def get_default_tokenizer() -> SimpleTokenizer:
    """Return a process-wide shared :class:`SimpleTokenizer` built from the bundled vocabulary (loaded once)."""
    return SimpleTokenizer()


class Tokenize:
    """Turn strings into fixed-length rows of CLIP token ids ``[SOT, tokens..., EOT, 0, 0, ...]``.

    Args:
        tokenizer: a :class:`SimpleTokenizer`; ``None`` uses :func:`get_default_tokenizer`.
        max_seq_len: row length (77 for OneFormer).
        truncate: if True, over-long texts keep their first ``max_seq_len`` ids with the last one replaced by EOT;
            if False they raise ``ValueError``.
    """

    def __init__(self, tokenizer: Optional[SimpleTokenizer] = None, max_seq_len: int = 77, truncate: bool = True):
        if int(max_seq_len) < 2:
            raise ValueError(f"max_seq_len must be at least 2 (room for SOT and EOT), got {max_seq_len}")
        self.tokenizer = tokenizer if tokenizer is not None else get_default_tokenizer()
        self.max_seq_len = int(max_seq_len)
        self.truncate = bool(truncate)

    def _row(self, text: str) -> List[int]:
        if not isinstance(text, str):
            raise TypeError(f"Tokenize expects str or list of str, got element of type {type(text).__name__}")
        tok = self.tokenizer
        ids = [tok.sot_token_id] + tok.encode(text) + [tok.eot_token_id]
        if len(ids) > self.max_seq_len:
            if not self.truncate:
                raise ValueError(
                    f"Input text {text!r} is too long: {len(ids)} tokens including SOT/EOT, "
                    f"max_seq_len is {self.max_seq_len}"
                )
            ids = ids[: self.max_seq_len]
            ids[-1] = tok.eot_token_id
        return ids

    def __call__(self, texts: Union[str, Sequence[str]]) -> torch.Tensor:
        """Tokenize one string or a list of strings.

        Takes ``texts``: a str or a sequence of str. Returns a ``torch.LongTensor`` of shape ``(max_seq_len,)`` for a
        str and ``(len(texts), max_seq_len)`` for a sequence (``(0, max_seq_len)`` for an empty one), zero-padded.
        """
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        out = torch.zeros(len(items), self.max_seq_len, dtype=torch.long)
        for r, text in enumerate(items):
            ids = self._row(text)
            out[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out[0] if single else out


def task_tokens(task: str, tokenizer: Optional[SimpleTokenizer] = None, max_seq_len: int = 77) -> torch.Tensor:
    """Token ids of the OneFormer task prompt ``"The task is {task}"``.

    Args:
        task: exactly one of ``"semantic"``, ``"instance"``, ``"panoptic"``.
        tokenizer: a :class:`SimpleTokenizer`; ``None`` uses the shared default one.
        max_seq_len: length of the returned row (77 for OneFormer).
    Returns:
        ``torch.LongTensor`` of shape ``(max_seq_len,)``, e.g. ``[49406, 518, 10549, 533, 1072, 24755, 49407, 0, ...]``
        for ``"panoptic"``.
    Raises:
        ValueError: if ``task`` is not one of the three allowed names (the message names the bad value).
    """
    if not isinstance(task, str) or task not in TASKS:
        raise ValueError(f"Unknown OneFormer task {task!r}; expected one of {list(TASKS)}")
    return Tokenize(tokenizer, max_seq_len=max_seq_len, truncate=True)(f"The task is {task}")
