"""MkDocs hook: the Sphinx roles of npconv's docstrings as links (or plain code).

The docstrings are numpydoc and say ``:func:`conv```, which mkdocstrings leaves as
the literal text ``:func:`` followed by the code span. This hook turns each such
role into an optional cross-reference that mkdocs-autorefs resolves to the API
reference entry (``npconv.<name>``, or ``npconv.<name>.<name>`` for the functions
named after their module), and into plain code where there is no entry.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|obj):<code>~?([\w.]+)</code>")


def _fallback(identifier: str) -> str:
    """Where else the entry may be: npconv.nn or npconv.testing, or the function that
    shares its module's name (npconv.patches.patches)."""
    import npconv.nn
    import npconv.testing

    last = identifier.rsplit(".", 1)[-1]
    for module in (npconv.nn, npconv.testing):
        if last in module.__all__:
            return f"{module.__name__}.{last}"
    return f"{identifier}.{last}"


def _link(match: re.Match[str]) -> str:
    name = match[1]
    identifier = name if name.startswith("npconv.") else f"npconv.{name}"
    fallback = _fallback(identifier)
    title = name.rsplit(".", 1)[-1] if match[0].count("~") else name
    return (f'<autoref identifier="{identifier}" slug="{fallback}" optional>'
            f"<code>{title}</code></autoref>")


def on_page_content(html: str, **kwargs: Any) -> str:
    return ROLE.sub(_link, html)
