"""What every top-level screen shares: the nav bar, polling while visible, error reporting."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar, cast

from textual.screen import Screen

from client.errors import ClientError
from client.tui.messages import ApiFailed, ApiRecovered
from client.tui.widgets.navbar import NavBar

if TYPE_CHECKING:
    from client.tui.app import GpuhopApp

T = TypeVar("T")


class GpuhopScreen(Screen[None]):
    """A top-level screen (one per App mode).

    Subclasses set ``MODE`` and may implement ``start_polling``; it runs while
    the screen is visible and its workers (group ``MODE``) are cancelled when
    another screen takes over, so hidden screens cost nothing.
    """

    MODE = ""

    @property
    def gpuhop(self) -> GpuhopApp:
        return cast("GpuhopApp", self.app)

    def nav(self) -> NavBar:
        return NavBar(self.MODE)

    def on_screen_resume(self) -> None:
        self.start_polling()

    def on_screen_suspend(self) -> None:
        self.workers.cancel_group(self, self.MODE)

    def start_polling(self) -> None:
        """Start this screen's refresh worker(s); default: nothing to poll."""

    async def call(self, what: str, pending: Awaitable[T]) -> T | None:
        """Await an API call from a worker; a failure becomes one ``ApiFailed`` message."""
        try:
            result = await pending
        except ClientError as exc:
            self.post_message(ApiFailed(what, exc))
            return None
        except Exception as exc:  # a bug must not take the terminal down with a traceback
            self.log.error(f"{what}: {exc!r}")
            self.post_message(ApiFailed(what, ClientError(f"{what}: unexpected error: {exc!r}")))
            return None
        if self.gpuhop.status.state != "live":
            self.post_message(ApiRecovered())
        return result
