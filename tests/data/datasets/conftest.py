import itertools
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

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
    for catalog in (DatasetCatalog, MetadataCatalog):
        for name in list(catalog.list()):
            if name.startswith(prefix):
                catalog.remove(name)
