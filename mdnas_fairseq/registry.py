"""Registering the plugin's tasks, models, architectures and criterion with fairseq, once.

The package can be imported more than once (as ``--user-dir`` and as the installed package, by
tests and by the checkpoint loader); fairseq refuses a name registered twice, so every registration
goes through :func:`register_once`.
"""

from typing import Callable, Mapping


def register_once(registry: Mapping, name: str, register: Callable[[], object]) -> None:
    """Call ``register()`` unless ``name`` is already in fairseq's ``registry``."""
    if name not in registry:
        register()
