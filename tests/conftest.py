"""Fixtures shared by the dataset and evaluation tests."""
import itertools
import os

import pytest
from tests.tiny import load_script, unregister_prefix

_counter = itertools.count()


@pytest.fixture
def datasets_root(tmp_path, monkeypatch):
    """A fresh $DETECTRON2_DATASETS."""
    root = tmp_path / "datasets"
    root.mkdir()
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    return str(root)


@pytest.fixture
def unique_prefix():
    """A name prefix for registrations made by one test; they are removed afterwards."""
    prefix = f"t{next(_counter)}_{os.getpid()}_"
    yield prefix
    unregister_prefix(prefix)


@pytest.fixture
def ade_prepared(datasets_root):
    """Raw ADE20K-style files under ``datasets_root``, turned into the derived files by the preparation scripts."""
    from tests.data.datasets import fake_data as fd

    fd.make_ade_raw(datasets_root)
    for script in ("prepare_ade20k_sem_seg", "prepare_ade20k_pan_seg", "prepare_ade20k_ins_seg"):
        assert load_script(script).main(["--dataset-dir", datasets_root]) == 0
    return datasets_root
