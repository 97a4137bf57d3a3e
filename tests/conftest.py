"""Fixtures shared by the tests."""
import itertools
import logging
import os

import pytest
from tests.tiny import load_script, unregister_prefix

_counter = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def restore_loggers():
    """Every test module: train_net.setup() (via default_setup) attaches console/file handlers to these loggers and
    stops their propagation; undo that when the module is done so later modules (caplog) see the usual logging."""
    names = ("detectron2", "fvcore", "oneformer")
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate, logging.getLogger(n).level)
             for n in names}
    yield
    for n, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(n)
        for h in logger.handlers:
            if h not in handlers:
                h.close()
        logger.handlers[:] = handlers
        logger.propagate, logger.level = propagate, level


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
