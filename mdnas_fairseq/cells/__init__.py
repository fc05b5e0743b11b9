"""Searchable cells (pure PyTorch): the DARTS recurrent cell and the DARTS conv cell."""
