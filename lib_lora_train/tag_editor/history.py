"""Undo / redo of caption edits.

A change stores the tags of only the entries it touched, before and after, so undoing "remove `highres`" from a
10,000-image dataset restores the 300 captions that had it and nothing else. Tags are stored as tuples: immutable,
and they share the tag strings with the dataset, so a change costs little memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

TagTuple = tuple[str, ...]


@dataclass(frozen=True)
class Change:
    """One user action: ``before`` and ``after`` map entry ids to their tags."""

    label: str
    before: Mapping[int, TagTuple]
    after: Mapping[int, TagTuple]

    @property
    def size(self) -> int:
        return len(self.after)


class History:
    """Two stacks of changes; a new change clears the redo stack, as in every editor."""

    def __init__(self, limit: int = 200):
        if limit < 1:
            raise ValueError(f"history limit must be at least 1, got {limit}")
        self.limit = limit
        self._undo: list[Change] = []
        self._redo: list[Change] = []

    def push(self, change: Change) -> None:
        self._undo.append(change)
        self._redo.clear()
        if len(self._undo) > self.limit:
            # the oldest change is forgotten, not the newest: users undo recent mistakes
            del self._undo[0]

    def take_undo(self) -> Change | None:
        """The change to revert, moved onto the redo stack; None when there is nothing to undo."""
        if not self._undo:
            return None
        change = self._undo.pop()
        self._redo.append(change)
        return change

    def take_redo(self) -> Change | None:
        """The change to apply again, moved back onto the undo stack; None when there is nothing to redo."""
        if not self._redo:
            return None
        change = self._redo.pop()
        self._undo.append(change)
        return change

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo_labels(self) -> list[str]:
        """Labels of the undoable changes, newest first (for a history list in the UI)."""
        return [c.label for c in reversed(self._undo)]

    def redo_labels(self) -> list[str]:
        return [c.label for c in reversed(self._redo)]
