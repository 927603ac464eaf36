"""Progress of a long run: one line on stderr as each step starts, "[bench 7/49 2:13] what it does"."""

from __future__ import annotations

import sys
import time


class Progress:
    """Numbers the steps against a total counted before the run, with the time since it began."""

    def __init__(self, name: str, total: int) -> None:
        self.name = name
        self.total = total
        self.done = 0
        self.began = time.monotonic()

    def step(self, text: str) -> None:
        self.done += 1
        minutes, seconds = divmod(int(time.monotonic() - self.began), 60)
        line = f"[{self.name} {self.done}/{self.total} {minutes}:{seconds:02}] {text}"
        print(line, file=sys.stderr, flush=True)
