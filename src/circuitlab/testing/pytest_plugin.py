"""pytest fixtures for plugin tests, registered through the ``pytest11`` entry point of circuitlab.

- ``tiny``: one ``circuitlab.testing.Tiny`` per session (a corpus of real stdlib files in a temporary
  folder; circuitlab's cache goes to a temporary folder too unless ``CIRCUITLAB_CACHE`` is set);
- ``tiny_tokenizer``: the project BPE trained on that corpus (session);
- ``tiny_config``: a ``TrainConfig`` of the tiny preset on that corpus: 12 steps, density 0.25;
- ``tiny_model``: a fresh, seeded tiny GPT (per test, so tests may change it);
- ``tiny_run``: a trained tiny run folder (12 topk steps, seconds; session).

Importing this module imports neither torch nor anything heavy, so it costs nothing in test
sessions that never use the fixtures.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    from circuitlab.testing import Tiny

    root = tmp_path_factory.mktemp("circuitlab-tiny")
    old = os.environ.get("CIRCUITLAB_CACHE")
    if not old:
        os.environ["CIRCUITLAB_CACHE"] = str(root / "cache")
    yield Tiny(root)
    if not old:
        os.environ.pop("CIRCUITLAB_CACHE", None)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny):
    return tiny.tokenizer


@pytest.fixture()
def tiny_config(tiny):
    return tiny.config()


@pytest.fixture()
def tiny_model(tiny):
    return tiny.model(0)


@pytest.fixture(scope="session")
def tiny_run(tiny):
    return tiny.run()
