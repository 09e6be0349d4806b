"""Draws a pyte screen: the replayed terminal, with its colours and attributes."""

from __future__ import annotations

import pyte
from rich.style import Style
from rich.text import Text
from textual.widget import Widget

# pyte's names for the 16 ANSI colours ("brown" is its yellow)
_COLOURS = {
    "black": "black",
    "red": "red",
    "green": "green",
    "brown": "yellow",
    "blue": "blue",
    "magenta": "magenta",
    "cyan": "cyan",
    "white": "white",
}


def _colour(name: str) -> str | None:
    if name == "default":
        return None
    if name.startswith("bright"):
        base = _COLOURS.get(name[len("bright") :])
        return f"bright_{base}" if base else None
    if name in _COLOURS:
        return _COLOURS[name]
    if len(name) == 6:
        try:
            int(name, 16)
        except ValueError:
            return None
        return "#" + name
    return None


def screen_text(screen: pyte.Screen, *, cursor: bool = True) -> Text:
    """The whole screen as one rich ``Text``, a line per row."""
    out = Text(no_wrap=True, overflow="crop")
    styles: dict[tuple[str, str, bool, bool, bool, bool], Style] = {}
    for y in range(screen.lines):
        row = screen.buffer[y]
        for x in range(screen.columns):
            ch = row[x]
            key = (ch.fg, ch.bg, ch.bold, ch.italics, ch.underscore, ch.reverse)
            if cursor and not screen.cursor.hidden and (x, y) == (screen.cursor.x, screen.cursor.y):
                key = (*key[:5], not ch.reverse)
            style = styles.get(key)
            if style is None:
                style = Style(
                    color=_colour(ch.fg),
                    bgcolor=_colour(ch.bg),
                    bold=ch.bold or None,
                    italic=ch.italics or None,
                    underline=ch.underscore or None,
                    reverse=key[5] or None,
                )
                styles[key] = style
            out.append(ch.data or " ", style)
        if y < screen.lines - 1:
            out.append("\n")
    return out


class TerminalView(Widget):
    """Shows the screen it is given; the replay screen calls ``show`` after each step."""

    DEFAULT_CSS = "TerminalView { height: auto; width: auto; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._text = Text()
        self._cells = (0, 0)

    def show(self, screen: pyte.Screen) -> None:
        """Draw ``screen`` at its own size (the container scrolls; lines never wrap)."""
        size = (screen.columns, screen.lines)
        if size != self._cells:
            self._cells = size
            self.styles.width, self.styles.height = size
        self._text = screen_text(screen)
        self.refresh()

    @property
    def plain(self) -> str:
        return self._text.plain

    def render(self) -> Text:
        return self._text
