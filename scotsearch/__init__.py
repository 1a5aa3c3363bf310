"""scotsearch: fast, resumable layer and hyper-parameter search for SCOT / HPF.

The package is mostly used through the ``scotsearch`` command; the library
entry points are :func:`scotsearch.data.load_dataset`,
:func:`scotsearch.backbones.load_backbone`, :class:`scotsearch.evaluate.Evaluator`
and :func:`scotsearch.cache.open_source`.
"""

from scotsearch._version import __version__

__all__ = ["__version__"]
