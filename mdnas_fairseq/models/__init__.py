from .mdnas_rnn import MDNASRNNModel  # noqa: F401
from .mdnas_transformer_lm import MDNASTransformerModel  # noqa: F401
