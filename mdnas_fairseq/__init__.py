"""mdnas-fairseq."""
