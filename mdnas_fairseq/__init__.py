"""mdnas-fairseq: concordant multi-domain differentiable architecture search as a fairseq plugin.

Use it as ``--user-dir mdnas_fairseq``; importing the package registers (once, also when it is
imported again) the tasks ``multidomain_nas`` and ``rotated_mnist_nas``, the models ``mdnas_rnn*`` and
``mdnas_conv`` and the criterion
``multidomain_nas_loss``. The search core, free of fairseq, is :mod:`mdnas_fairseq.search`.
"""
__version__ = "0.1.0"

try:
    import fairseq  # noqa: F401
except ImportError:  # the pure-PyTorch core (mdnas_fairseq.search, .cells) works without fairseq
    fairseq = None

if fairseq is not None:
    from . import criterions, models, tasks, vision  # noqa: F401,E402
