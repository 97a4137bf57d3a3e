"""Facts about the original release that tests compare against (copied, gzipped, from the project's spec folder).

``load_reference("keys_ade20k_swin_large.json")`` returns the parsed JSON: state_dict layouts as
[name, shape, dtype] lists, ``param_counts.json`` and ``tokenizer_facts.json``.
"""
import gzip
import json
import os

REFERENCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_layouts")


def load_reference(filename: str):
    """Parsed content of reference file ``filename`` (e.g. "param_counts.json")."""
    with gzip.open(os.path.join(REFERENCE_DIR, filename + ".gz"), "rt", encoding="utf-8") as f:
        return json.load(f)
