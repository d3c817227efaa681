"""Stop strings over a text stream: cut exactly before the first occurrence, even across pieces.

Streamed text arrives in pieces (one or more characters per token), and a stop string may
begin in one piece and end several pieces later. `StopStrings.push` therefore holds back the
longest tail of the text that could still be the beginning of a stop string, and releases it
only once it can no longer be one. The text released over a whole stream is exactly
``full_text[:first_stop_index]`` (or ``full_text`` when no stop string occurs), where the first
stop is the earliest occurrence of any of the strings (on a tie, the longest is irrelevant: the
cut point is the same).
"""

from __future__ import annotations


class StopStrings:
    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.held = ""  # text received but not yet released
        self.stopped = False

    def _holdback(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best

    def push(self, piece: str) -> str:
        """Add a piece; return the text that is now safe to release ("" after a stop)."""
        if self.stopped:
            return ""
        text = self.held + piece
        if not self.stops:
            self.held = ""
            return text
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self.held = True, ""
            return text[:cut]
        keep = self._holdback(text)
        self.held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        """The stream ended without a stop: release what was held back."""
        out, self.held = ("" if self.stopped else self.held), ""
        return out
