from .mdnas_conv import MDNASConvModel  # noqa: F401
from .mdnas_rnn import MDNASRNNModel  # noqa: F401
