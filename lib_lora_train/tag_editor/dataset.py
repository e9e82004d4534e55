"""The dataset model: images, their captions as tag lists, an index tag -> images, and the edit history.

Built for 10,000 images: loading reads caption files only (no image is opened or stat'ed), the index is a
``dict[tag, set[entry id]]`` that every edit updates for the changed entries only, frequencies are the sizes of
those sets, and the set of unsaved ("dirty") entries is kept as edits happen, so a save touches only those.
"""

from __future__ import annotations

import gc
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lib_lora_train.images import IMAGE_EXTENSIONS
from lib_lora_train.tag_editor import cleanup
from lib_lora_train.tag_editor.captions import join_tags, split_tags
from lib_lora_train.tag_editor.history import Change, History, TagTuple


class DatasetError(Exception):
    """A folder that cannot be opened as a dataset; the message names it and says what to do."""


@dataclass
class Entry:
    """One image and its caption.

    ``saved_tags`` are the tags as they are on disk (None: the image has no caption file yet). ``error`` is set
    when the caption file could not be read as UTF-8: such an entry is locked, no edit or save touches it.
    """

    id: int
    image_file: str  # paths kept as str: 20,000 Path objects would cost a third of the load time
    caption_file: str
    tags: list[str]
    saved_tags: TagTuple | None
    error: str | None = None
    # (mtime_ns, size) of the caption file when it was read or last saved: a save refuses to overwrite a caption
    # that another program changed since (None: there was no caption file)
    disk_stamp: tuple[int, int] | None = None

    @property
    def image(self) -> Path:
        return Path(self.image_file)

    @property
    def caption_path(self) -> Path:
        return Path(self.caption_file)

    @property
    def locked(self) -> bool:
        return self.error is not None

    @property
    def has_caption_file(self) -> bool:
        return self.saved_tags is not None or self.error is not None

    @property
    def dirty(self) -> bool:
        if self.locked:
            return False
        if self.saved_tags is None:
            return bool(self.tags)  # never create an empty caption file for an untouched image
        return tuple(self.tags) != self.saved_tags

    @property
    def caption(self) -> str:
        return join_tags(self.tags)


class Operation(Protocol):
    """A batch edit (see ``operations.py``): a pure function on one entry's tags.

    ``touches``: when set, only entries that have at least one of these tags can change, so the dataset uses its
    index to visit only them.
    """

    label: str

    @property
    def touches(self) -> frozenset[str] | None: ...

    def transform(self, tags: list[str]) -> list[str]: ...


class Dataset:
    """A folder of images and captions held in memory; see the module docstring."""

    def __init__(self, root: Path, *, caption_extension: str = ".txt", recursive: bool = True):
        self.root = Path(root)
        self.caption_extension = caption_extension
        self.recursive = recursive
        self.entries: dict[int, Entry] = {}
        self.index: dict[str, set[int]] = {}
        self.history = History()
        self.load_errors: list[str] = []
        self._dirty: set[int] = set()
        self._text: dict[int, str] = {}  # caption text per entry, joined on first search and dropped on edit
        self._lower: dict[int, str] = {}  # the same, lowercased: case-insensitive search without re.IGNORECASE
        self._next_id = 0

    # --- loading ----------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, folder: str | os.PathLike, *, recursive: bool = True, caption_extension: str = ".txt") -> Dataset:
        """Read every image's caption under ``folder``; images without a caption get an empty tag list.

        Hidden files and folders (the trash, temp files of an interrupted save) are skipped. Captions that are not
        valid UTF-8 are listed in ``load_errors`` and their entries locked.
        """
        # absolute, so that entry paths stay valid whatever the working folder (and can be checked by the API)
        root = Path(os.path.abspath(Path(folder).expanduser()))
        if not root.is_dir():
            raise DatasetError(f"{root}: not a folder; type the path of the folder that holds the images")
        if not caption_extension.startswith(".") or "/" in caption_extension or os.sep in caption_extension:
            raise DatasetError(f"caption extension {caption_extension!r} should look like '.txt' or '.caption'")
        dataset = cls(root, caption_extension=caption_extension, recursive=recursive)
        stale: list[str] = []
        with _collector_paused():
            dataset._load_captions(root, recursive, stale)
        cleanup.discard_later(stale)  # temp files of a save whose process was killed
        return dataset

    def _load_captions(self, root: Path, recursive: bool, stale: list[str]) -> None:
        dataset, caption_extension = self, self.caption_extension
        # built as a defaultdict (one C-level lookup per tag), handed over as a plain dict: elsewhere a missing tag
        # must not be inserted by a mere lookup
        index: defaultdict[str, set[int]] = defaultdict(set)
        for directory, names in _walk(root, recursive, dataset.load_errors, stale):
            name_set = set(names)
            caption_owner: dict[str, str] = {}
            for name in names:
                stem, ext = os.path.splitext(name)
                if ext.lower() not in IMAGE_EXTENSIONS:
                    continue
                caption_name = stem + caption_extension
                # a.png and a.jpg would share a.txt: editing one would overwrite the other's caption
                owner = caption_owner.setdefault(caption_name, name)
                conflict = None
                if owner != name:
                    conflict = (
                        f"{os.path.join(directory, name)}: shares the caption {caption_name} with {owner}; it is "
                        "left untouched — rename one of the two images (and copy the caption) and reload"
                    )
                    dataset.load_errors.append(conflict)
                dataset._add_loaded(
                    index,
                    os.path.join(directory, name),
                    os.path.join(directory, caption_name),
                    caption_name in name_set,
                    conflict,
                )
        self.index = dict(index)

    def _add_loaded(
        self, index: defaultdict[str, set[int]], image: str, caption_path: str, has_caption: bool, conflict: str | None
    ) -> None:
        tags: list[str] = []
        saved: TagTuple | None = None
        stamp = None
        error = conflict
        if has_caption:
            try:
                with open(caption_path, "rb") as handle:
                    raw = handle.read()
                    info = os.fstat(handle.fileno())
                    stamp = (info.st_mtime_ns, info.st_size)
                tags = split_tags(raw.decode("utf-8"))
                saved = tuple(tags)
            except UnicodeDecodeError as exc:
                error = (
                    f"{caption_path}: not valid UTF-8 text (byte {exc.start}); it is left untouched — re-save it "
                    "as UTF-8 in a text editor and reload"
                )
                self.load_errors.append(error)
            except OSError as exc:
                error = f"{caption_path}: cannot be read ({exc.strerror}); it is left untouched"
                self.load_errors.append(error)
        entry_id = self._next_id
        self._next_id += 1
        self.entries[entry_id] = Entry(entry_id, image, caption_path, tags, saved, error, stamp)
        for tag in tags:  # a duplicate tag just adds the id again
            index[tag].add(entry_id)

    # --- reading ----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.entries)

    def ids(self) -> list[int]:
        """All entry ids in load order (sorted by path)."""
        return list(self.entries)

    def entry(self, entry_id: int) -> Entry:
        return self.entries[entry_id]

    def relative(self, entry_id: int) -> str:
        """The image path relative to the dataset folder, with forward slashes."""
        return self.entries[entry_id].image.relative_to(self.root).as_posix()

    def find(self, image_path: str | os.PathLike) -> int | None:
        """The entry id of an image path (absolute or relative to the root), or None."""
        target = Path(image_path)
        if not target.is_absolute():
            target = self.root / target
        wanted = os.path.normpath(target)
        for entry in self.entries.values():
            if os.path.normpath(entry.image_file) == wanted:
                return entry.id
        return None

    def frequencies(self, ids: Iterable[int] | None = None) -> Counter[str]:
        """Tag -> number of images that have it, over ``ids`` (all entries when None)."""
        if ids is None:
            return Counter({tag: len(members) for tag, members in self.index.items()})
        counts: Counter[str] = Counter()
        entries = self.entries
        for entry_id in ids:
            counts.update(set(entries[entry_id].tags))
        return counts

    def caption_text(self, entry_id: int) -> str:
        """The caption as it would be written (``"a, b"``); cached, so repeated text searches do not re-join."""
        text = self._text.get(entry_id)
        if text is None:
            text = self._text[entry_id] = join_tags(self.entries[entry_id].tags)
        return text

    def caption_lower(self, entry_id: int) -> str:
        """``caption_text`` in lower case, cached the same way."""
        text = self._lower.get(entry_id)
        if text is None:
            text = self._lower[entry_id] = self.caption_text(entry_id).lower()
        return text

    def all_tags(self) -> list[str]:
        """Every tag in the dataset, most frequent first (ties by name): the autocomplete list."""
        return sorted(self.index, key=lambda tag: (-len(self.index[tag]), tag))

    def dirty_ids(self) -> list[int]:
        return sorted(self._dirty)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    # --- editing ----------------------------------------------------------------------------------------------

    def _set(self, entry_id: int, tags: TagTuple) -> None:
        """Give an entry new tags, updating only its own index entries, its cached text and its dirty flag."""
        self._replace_tags(self.entries[entry_id], tags)

    def _replace_tags(self, entry: Entry, tags: TagTuple) -> None:
        # the body of every batch edit, undo and redo: it runs 10,000 times for an edit of a whole dataset
        entry_id = entry.id
        old, new = set(entry.tags), set(tags)
        if old != new:  # a reorder or a duplicate leaves the index as it is
            index = self.index
            for tag in old - new:
                members = index[tag]
                members.discard(entry_id)
                if not members:
                    del index[tag]
            for tag in new - old:
                members = index.get(tag)
                if members is None:
                    index[tag] = {entry_id}
                else:
                    members.add(entry_id)
        entry.tags = list(tags)
        self._text.pop(entry_id, None)
        self._lower.pop(entry_id, None)
        saved = entry.saved_tags
        # same rule as Entry.dirty, on the tuple we already have
        if entry.error is None and (tags != saved if saved is not None else bool(tags)):
            self._dirty.add(entry_id)
        else:
            self._dirty.discard(entry_id)

    def apply(self, operation: Operation, ids: Iterable[int] | None = None) -> int:
        """Run a batch edit over ``ids`` (all entries when None); returns how many captions changed.

        The change is one undo step. Locked entries are skipped.
        """
        touches = operation.touches
        if touches is not None:
            reach: set[int] = set()
            for tag in touches:
                reach |= self.index.get(tag, set())
            candidates: Iterable[int] = sorted(reach) if ids is None else [i for i in ids if i in reach]
        else:
            candidates = self.entries if ids is None else ids
        before: dict[int, TagTuple] = {}
        after: dict[int, TagTuple] = {}
        entries = self.entries
        transform = operation.transform
        with _collector_paused():
            for entry_id in candidates:
                entry = entries.get(entry_id)
                if entry is None or entry.error is not None:  # gone, or locked
                    continue
                old = entry.tags
                new = transform(old)
                if new != old:
                    before[entry_id] = tuple(old)
                    after[entry_id] = changed = tuple(new)
                    self._replace_tags(entry, changed)
        if after:
            self.history.push(Change(operation.label, before, after))
        return len(after)

    def set_caption(self, entry_id: int, text: str) -> bool:
        """Replace one image's caption with ``text`` (as typed by the user); one undo step. True if it changed."""
        entry = self.entries[entry_id]
        if entry.locked:
            raise DatasetError(entry.error)
        new = split_tags(text)
        if new == entry.tags:
            return False
        after = tuple(new)
        self.history.push(Change(f"edit {self.relative(entry_id)}", {entry_id: tuple(entry.tags)}, {entry_id: after}))
        self._set(entry_id, after)
        return True

    def undo(self) -> str | None:
        """Revert the last change; returns its label, or None when there is nothing to undo."""
        change = self.history.take_undo()
        if change is None:
            return None
        self._restore(change.before)
        return change.label

    def redo(self) -> str | None:
        """Apply the last undone change again; returns its label, or None."""
        change = self.history.take_redo()
        if change is None:
            return None
        self._restore(change.after)
        return change.label

    def _restore(self, state: Mapping[int, TagTuple]) -> None:
        entries = self.entries
        with _collector_paused():
            for entry_id, tags in state.items():
                entry = entries.get(entry_id)
                if entry is not None:  # an image moved to the trash since stays gone
                    self._replace_tags(entry, tags)

    def remove_entry(self, entry_id: int) -> Entry:
        """Forget one entry (after its files went to the trash); its index entries go with it."""
        entry = self.entries.pop(entry_id)
        self._dirty.discard(entry_id)
        self._text.pop(entry_id, None)
        self._lower.pop(entry_id, None)
        for tag in set(entry.tags):
            members = self.index[tag]
            members.discard(entry_id)
            if not members:
                del self.index[tag]
        return entry

    def mark_saved(self, entry_id: int, tags: TagTuple, stamp: tuple[int, int] | None = None) -> None:
        """Record that ``tags`` are now on disk for this entry, in a file with ``stamp`` (called by the saver)."""
        entry = self.entries[entry_id]
        entry.saved_tags = tags
        entry.disk_stamp = stamp
        if entry.dirty:
            self._dirty.add(entry_id)
        else:
            self._dirty.discard(entry_id)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside a loop over every caption.

    Such a loop allocates tens of thousands of lists, tuples and sets, which starts collections that walk the
    whole dataset again and again (30-60 ms of a 10,000-caption edit, measured). None of those objects can form a
    cycle, so nothing is left for the collector when it is switched back on.
    """
    if not gc.isenabled():  # someone else paused it: leave it as they want it
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _walk(root: Path, recursive: bool, errors: list[str], stale: list[str]) -> Iterable[tuple[str, list[str]]]:
    """(folder, sorted file names) for ``root`` and, when recursive, its non-hidden sub-folders, in sorted order.

    Hidden files are skipped; the paths of those that are temp files left by a killed save go to ``stale``.
    """
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        files, dirs = [], []
        try:
            with os.scandir(directory) as scan:
                for item in scan:
                    if item.name.startswith("."):
                        if cleanup.stale_temp(item.name) and item.is_file(follow_symlinks=False):
                            stale.append(item.path)
                        continue
                    if item.is_dir(follow_symlinks=False):
                        dirs.append(item.path)
                    else:
                        files.append(item.name)
        except OSError as exc:
            errors.append(f"{directory}: cannot be listed ({exc.strerror}); its images are not loaded")
            continue
        files.sort()
        yield directory, files
        if recursive:
            stack.extend(sorted(dirs, reverse=True))
