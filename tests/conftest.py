"""Shared test configuration: the ``slow`` marker (every test under tests/integration/, which runs
fairseq commands, gets it) and the tiny real corpora the integration tests train on."""

import os

import pytest

from tests.helpers.fairseq_runs import make_tiny_corpus

INTEGRATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "integration")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: runs fairseq commands (seconds to minutes); -m 'not slow' skips them"
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.fspath).startswith(INTEGRATION):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """``tiny_corpus(rows, langs)``: the data-bin of the first ``rows`` short rows of the embedded
    corpus, prepared once per session and shared by the tests that ask for the same one."""
    made = {}

    def get(rows=400, langs=("en", "de")):
        key = (rows, tuple(langs))
        if key not in made:
            made[key] = make_tiny_corpus(
                str(tmp_path_factory.mktemp("corpus")), rows=rows, langs=tuple(langs)
            )
        return made[key]

    return get
