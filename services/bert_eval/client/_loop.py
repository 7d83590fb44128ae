"""A private event loop on a thread of its own, so synchronous code (a script, or a Jupyter cell, whose
own loop is already running) can wait on coroutines without `asyncio.run`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """One event loop running forever on a daemon thread; `run` waits for a coroutine on it."""

    def __init__(self, name: str = "bert-eval-client") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def closed(self) -> bool:
        """True once the loop is closed or its thread has ended: nothing more can run on it."""
        return self._loop.is_closed() or not self._thread.is_alive()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """The coroutine's result, run on this thread's loop. Raises what it raises; `TimeoutError` after
        `timeout` seconds, and on Ctrl-C (KeyboardInterrupt) it is cancelled before the interrupt goes on."""
        if self.closed:
            coroutine.close()
            raise RuntimeError("this client is closed; create a new one")
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a synchronous client method was called from its own event loop; use AsyncClient there")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            if future.done():  # the coroutine's own TimeoutError
                raise
            future.cancel()
            raise TimeoutError(f"not done after {timeout} s") from None
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        """Stop the loop and its thread (idempotent)."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
