"""Tests for oneformer.data.tokenizer (CLIP BPE tokenizer, Tokenize, task_tokens) against reference facts."""
import gzip
import hashlib
import os

import pytest
import torch

from oneformer.data import tokenizer as tk
from oneformer.data.tokenizer import (
    DEFAULT_BPE_PATH,
    BPEVocabError,
    SimpleTokenizer,
    Tokenize,
    get_default_tokenizer,
    task_tokens,
)
from tests.reference import load_reference



@pytest.fixture(scope="module")
def facts():
    return load_reference("tokenizer_facts.json")


@pytest.fixture(scope="module")
def tok():
    return get_default_tokenizer()


# ---------------------------------------------------------------- vocabulary file

def test_vocab_is_package_data_next_to_module():
    assert os.path.dirname(DEFAULT_BPE_PATH) == os.path.dirname(os.path.abspath(tk.__file__))
    assert os.path.basename(DEFAULT_BPE_PATH) == "bpe_simple_vocab_16e6.txt.gz"
    assert os.path.isfile(DEFAULT_BPE_PATH)


def test_vocab_md5(facts):
    with open(DEFAULT_BPE_PATH, "rb") as f:
        raw = f.read()
    assert hashlib.md5(raw).hexdigest() == facts["bpe_gz_md5"]
    assert hashlib.md5(gzip.decompress(raw)).hexdigest() == facts["bpe_txt_md5"]


def test_vocab_size_and_specials(tok, facts):
    assert len(tok) == tok.vocab_size == facts["vocab_size"] == 49408
    assert tok.sot_token_id == facts["sot"] == 49406
    assert tok.eot_token_id == facts["eot"] == 49407
    # byte symbols: visible bytes first ('!' is id 0), word-final copies start at 256
    assert tok.convert_ids_to_tokens([0, 256, 320]) == ["!", "!</w>", "a</w>"]


def test_missing_vocab_names_file(tmp_path):
    missing = str(tmp_path / "nope_vocab.txt.gz")
    with pytest.raises(FileNotFoundError, match="nope_vocab.txt.gz"):
        SimpleTokenizer(bpe_path=missing)


def test_corrupt_vocab_names_file(tmp_path):
    bad = tmp_path / "corrupt_vocab.txt.gz"
    bad.write_bytes(b"this is not gzip data at all")
    with pytest.raises(BPEVocabError, match="corrupt_vocab.txt.gz"):
        SimpleTokenizer(bpe_path=str(bad))

    short = tmp_path / "short_vocab.txt.gz"
    short.write_bytes(gzip.compress(b"#version: 0.2\nt h\nth e</w>\n"))
    with pytest.raises(BPEVocabError, match="short_vocab.txt.gz"):
        SimpleTokenizer(bpe_path=str(short))


# ---------------------------------------------------------------- reference ids

def _check_row(row, expected_nonzero, length=77):
    assert row.dtype == torch.long
    assert row.shape == (length,)
    n = len(expected_nonzero)
    assert row[:n].tolist() == expected_nonzero
    assert torch.all(row[n:] == 0)


def test_task_strings_ids_and_padding(facts):
    tokenize = Tokenize(get_default_tokenizer(), max_seq_len=77)
    cased = [t for t in facts["tasks"] if t.startswith("The")]
    lower = [t for t in facts["tasks"] if t.startswith("the")]
    assert len(cased) == 3 and len(lower) == 3  # both casings are covered
    for text, info in facts["tasks"].items():
        row = tokenize(text)
        assert info["len_padded"] == 77
        _check_row(row, info["ids_nonzero"], info["len_padded"])


def test_task_strings_bpe_pieces(tok, facts):
    for text, info in facts["tasks"].items():
        pieces = info["bpe_pieces"]
        assert pieces[0] == "<|startoftext|>" and pieces[-1] == "<|endoftext|>"
        assert tok.tokenize(text) == pieces[1:-1]
        assert tok.convert_ids_to_tokens(info["ids_nonzero"]) == pieces
        assert tok.encode(text) == info["ids_nonzero"][1:-1]


def test_class_text_examples(facts):
    tokenize = Tokenize(max_seq_len=77)
    texts = list(facts["class_text_examples"])
    batch = tokenize(texts)
    assert batch.shape == (len(texts), 77) and batch.dtype == torch.long
    for r, text in enumerate(texts):
        _check_row(batch[r], facts["class_text_examples"][text])
        _check_row(tokenize(text), facts["class_text_examples"][text])


def test_task_tokens_helper(facts):
    for task in ("semantic", "instance", "panoptic"):
        row = task_tokens(task)
        _check_row(row, facts["tasks"][f"The task is {task}"]["ids_nonzero"])


@pytest.mark.parametrize("bad", ["Panoptic", "panoptic ", "detection", "", None, 3])
def test_task_tokens_rejects_bad_names(bad):
    with pytest.raises(ValueError) as ei:
        task_tokens(bad)
    msg = str(ei.value)
    assert repr(bad) in msg
    for allowed in ("semantic", "instance", "panoptic"):
        assert allowed in msg


# ---------------------------------------------------------------- Tokenize behaviour

def test_tokenize_shapes():
    tokenize = Tokenize(max_seq_len=77)
    assert tokenize("a photo").shape == (77,)
    assert tokenize(["a photo"]).shape == (1, 77)
    assert tokenize(["a", "b", "c"]).shape == (3, 77)
    assert tokenize([]).shape == (0, 77)
    assert tokenize(("x", "y")).shape == (2, 77)
    empty = tokenize("")
    assert empty[:2].tolist() == [49406, 49407] and torch.all(empty[2:] == 0)


def test_truncation_keeps_eot_last():
    tok = get_default_tokenizer()
    long_text = " ".join(["word"] * 200)
    for length in (77, 10):
        row = Tokenize(tok, max_seq_len=length, truncate=True)(long_text)
        assert row.shape == (length,)
        assert row[0].item() == tok.sot_token_id
        assert row[-1].item() == tok.eot_token_id
        assert torch.all(row != 0)
        assert row[1:-1].tolist() == tok.encode(long_text)[: length - 2]
    # exactly fitting text is not altered
    fit = " ".join(["word"] * 75)
    row = Tokenize(tok, max_seq_len=77)(fit)
    assert row[1:76].tolist() == tok.encode(fit) and row[76].item() == tok.eot_token_id


def test_no_truncate_raises_with_text_and_length():
    tokenize = Tokenize(max_seq_len=8, truncate=False)
    text = "one two three four five six seven eight"
    with pytest.raises(ValueError) as ei:
        tokenize(["short", text])
    msg = str(ei.value)
    assert text in msg and "10" in msg  # 8 words + SOT + EOT
    assert tokenize("one two three four five six").shape == (8,)  # 6 + 2 fits exactly


def test_tokenize_rejects_non_strings():
    with pytest.raises(TypeError):
        Tokenize()([1, 2])


# ---------------------------------------------------------------- cleaning and decode

def test_text_cleaning():
    tok = get_default_tokenizer()
    assert tok.encode("The   TASK\t is \n panoptic ") == tok.encode("the task is panoptic")
    assert tok.encode("fish &amp;amp; chips") == tok.encode("fish & chips")  # HTML unescaped twice


@pytest.mark.parametrize(
    "text",
    [
        "a photo with a road, route",
        "hello, world! isn't it nice? (yes) -- 42.5%",
        "caf\u00e9 na\u00efve \u00fcber \u00e5ngstr\u00f6m",
        "\u6771\u4eac and \u043c\u043e\u0441\u043a\u0432\u0430 \U0001f389",
        "a photo with a traffic light",
    ],
)
def test_decode_round_trip(text):
    tok = get_default_tokenizer()
    ids = tok.encode(text)
    decoded = tok.decode(ids)
    # decode inserts a space at every word end, so compare modulo whitespace; ids must round-trip exactly
    assert decoded.replace(" ", "") == text.lower().replace(" ", "")
    assert tok.encode(decoded) == ids


def test_decode_padded_row_skip_special():
    tok = get_default_tokenizer()
    row = Tokenize(tok)("A photo with a person")
    assert tok.decode(row, skip_special_tokens=True).strip() == "a photo with a person"
    assert tok.decode(row[:7]).startswith("<|startoftext|>")


def test_tokenizer_pickles():
    import pickle

    tok = get_default_tokenizer()
    tok.encode("warm the cache")
    clone = pickle.loads(pickle.dumps(Tokenize(tok)))
    assert torch.equal(clone("The task is semantic"), task_tokens("semantic"))
