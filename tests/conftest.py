"""Shared test configuration."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs fairseq commands in subprocesses (seconds to minutes)")
