"""The type of markup that is safe to put in the message frame as it is."""

from __future__ import annotations

import attrs


@attrs.frozen
class SafeHTML:
    """HTML that may be put in the message frame as it is.

    Made only by ``ourmail.web.sanitise.sanitise``, ``text_to_html`` and (for the compose
    page's editor) ``ourmail.web.richtext.clean``'s output.  ``blocked_remote``
    is true when remote content (images, CSS backgrounds) was removed because the reader had
    not allowed it.  ``__html__`` lets Jinja2's autoescape take it as markup.
    """

    html: str
    blocked_remote: bool = False

    def __html__(self) -> str:
        """The markup, for Jinja2 and MarkupSafe."""
        return self.html

    def __str__(self) -> str:
        return self.html
