"""mkdocs hook: the docstrings' Sphinx roles (:func:`x`, :class:`x`, ...) read as plain
code in the API reference, instead of the role's name printed before it."""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):(?=<code>)")


def on_page_content(html: str, **kwargs: object) -> str:
    return _ROLE.sub("", html)
