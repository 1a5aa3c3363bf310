"""Compatibility shim: ``pid_alive`` moved to :mod:`scotsearch._io`.

Kept only while ``scotsearch/data/demo.py`` (split in parallel, out of this change's scope)
still imports it from here; delete this file once demo imports ``scotsearch._io``.
"""

from __future__ import annotations

from scotsearch._io import pid_alive


__all__ = ["pid_alive"]
