"""The bilevel search as fairseq task hooks, shared by the language and the vision task."""

from .config import BilevelSearchConfig, parse_domains
from .host import SearchHost
from .mixin import BilevelSearchMixin

__all__ = ["BilevelSearchConfig", "BilevelSearchMixin", "SearchHost", "parse_domains"]
