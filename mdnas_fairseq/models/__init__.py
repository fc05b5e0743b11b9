from .mdnas_rnn import MDNASRNNModel  # noqa: F401
