"""Rotated-MNIST multi-domain search: data loading, the task ``rotated_mnist_nas`` and the model ``mdnas_conv``.

Importing this package (with fairseq installed) registers both; :mod:`.data` holds the MNIST
sources and splits.
"""
try:
    import fairseq  # noqa: F401
except ImportError:  # pragma: no cover
    fairseq = None

if fairseq is not None:
    from . import model, task  # noqa: F401,E402
