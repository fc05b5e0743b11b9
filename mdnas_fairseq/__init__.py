"""mdnas-fairseq: concordant multi-domain differentiable architecture search as a fairseq plugin.

Use it as ``fairseq-train --user-dir mdnas_fairseq``: importing the package (with fairseq installed)
registers, once (also when it is imported again), the tasks ``multidomain_nas`` and
``rotated_mnist_nas``, the models ``mdnas_rnn*`` and ``mdnas_conv*`` and the criterion
``multidomain_nas_loss``. Without fairseq the pure-PyTorch layers below still import.

Layers (each imports only the ones above it):

* :mod:`mdnas_fairseq.search`: the search core in pure PyTorch (search spaces, alpha, the bilevel
  architect and its virtual step, p, regularizers, genotypes and their files, parameter tables);
* :mod:`mdnas_fairseq.cells`: the searchable networks in pure PyTorch (recurrent, convolutional);
* the fairseq glue: :mod:`~mdnas_fairseq.data`, :mod:`~mdnas_fairseq.models`,
  :mod:`~mdnas_fairseq.criterions`, :mod:`~mdnas_fairseq.tasks` (the bilevel step in
  :mod:`mdnas_fairseq.tasks.bilevel`); :mod:`~mdnas_fairseq.viz` draws and reports.

Words (docs/method.md has the full glossary): a *domain* is a part of the data (a language, a
rotation); an *architecture* is what one or more domains use (an alpha row while searching, a
genotype cell after derivation); *alpha* is the (A, E, K) tensor of architecture parameters;
*weights* are only the shared network weights w; *mixing probabilities* are softmax(alpha); the
*alpha step* updates alpha on the *held-out split*; fairseq's ``--arch`` is the model's name.
"""

__version__ = "0.1.0"

try:
    import fairseq  # noqa: F401
except ImportError:  # the pure-PyTorch core (mdnas_fairseq.search, .cells) works without fairseq
    fairseq = None

if fairseq is not None:
    from . import criterions, models, tasks  # noqa: F401,E402
