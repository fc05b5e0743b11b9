from .mdnas_conv import MDNASConvModel  # noqa: F401
from .mdnas_rnn import MDNASRNNModel  # noqa: F401
from .mdnas_transformer import MDNASTransformerMTModel  # noqa: F401
from .mdnas_transformer_lm import MDNASTransformerModel  # noqa: F401
