"""What the editor tab shows, independent of any UI toolkit: the open dataset, the filter, the visible ids, the
selection, the gallery page and the image being edited.

The tab (``lib_lora_train.ui.tag_editor.tab``) only turns these plain values into components, so all of the
behaviour is testable without gradio.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lib_lora_train.images import ImageLoadError
from lib_lora_train.tag_editor.captions import split_tags
from lib_lora_train.tag_editor.dataset import Dataset, DatasetError, Operation
from lib_lora_train.tag_editor.filters import TagFilter, apply_filter, invert_selection
from lib_lora_train.tag_editor.operations import AddTags, RemoveTags
from lib_lora_train.tag_editor.saving import SaveReport, save_dataset
from lib_lora_train.tag_editor.thumbnails import ThumbnailCache
from lib_lora_train.tag_editor.trash import default_trash_dir, move_to_trash

Scope = Literal["filtered", "selected", "all"]
PAGE_SIZE = 100


@dataclass(frozen=True)
class GalleryItem:
    entry_id: int
    thumbnail: str | None  # None: the image could not be read (``error`` says why)
    label: str
    error: str | None = None


class EditorSession:
    """One editor's state. ``dataset`` is None until a folder is opened."""

    def __init__(self, thumbnail_dir: str | os.PathLike, page_size: int = PAGE_SIZE, thumbnail_size: int = 256):
        self.thumbnails = ThumbnailCache(thumbnail_dir, thumbnail_size)
        self.page_size = page_size
        self.dataset: Dataset | None = None
        self.filter = TagFilter()
        self.visible: list[int] = []
        self.selected: set[int] = set()
        self.page = 0
        self.current: int | None = None  # entry id shown in the per-image editor

    # --- opening and filtering --------------------------------------------------------------------------------

    def open(
        self, folder: str, *, recursive: bool = True, caption_extension: str = ".txt", discard_unsaved: bool = False
    ) -> str:
        """Load a folder (replacing the open one); returns a status line. Raises ``DatasetError``, also when the
        open dataset has unsaved edits and ``discard_unsaved`` is not set."""
        if self.dataset is not None and self.dataset.dirty and not discard_unsaved:
            raise DatasetError(
                f"{len(self.dataset.dirty_ids())} caption(s) in {self.dataset.root} are not saved; save them, or "
                "tick 'Discard unsaved edits' and load again"
            )
        self.dataset = Dataset.load(folder.strip(), recursive=recursive, caption_extension=caption_extension.strip())
        self.filter = TagFilter()
        self.selected.clear()
        self.refresh()
        self.current = self.visible[0] if self.visible else None
        untagged = sum(1 for e in self.dataset.entries.values() if not e.tags and not e.locked)
        status = f"{len(self.dataset)} images, {len(self.dataset.index)} tags, {untagged} without caption"
        if self.dataset.load_errors:
            status += f"; {len(self.dataset.load_errors)} problem(s): " + "; ".join(self.dataset.load_errors[:3])
        return status

    def require(self) -> Dataset:
        if self.dataset is None:
            raise DatasetError("no dataset is open; type a folder and press Load")
        return self.dataset

    def set_filter(self, tag_filter: TagFilter) -> None:
        self.filter = tag_filter
        self.page = 0
        self.refresh()

    def refresh(self) -> None:
        """Re-run the filter (after an edit the set may change); keeps the page in range."""
        dataset = self.require()
        self.visible = apply_filter(dataset, self.filter)
        visible = set(self.visible)
        self.selected &= visible
        self.page = min(self.page, max(0, self.page_count - 1))
        if self.current is not None and self.current not in dataset.entries:
            self.current = None

    # --- gallery ----------------------------------------------------------------------------------------------

    @property
    def page_count(self) -> int:
        return max(1, math.ceil(len(self.visible) / self.page_size))

    def page_ids(self, page: int | None = None) -> list[int]:
        if page is not None:
            self.page = max(0, min(int(page), self.page_count - 1))
        start = self.page * self.page_size
        return self.visible[start : start + self.page_size]

    def page_items(self, page: int | None = None) -> list[GalleryItem]:
        """The gallery page: thumbnails are made here (and cached), never for the images not shown."""
        dataset = self.require()
        ids = self.page_ids(page)
        thumbs = self.thumbnails.get_many([dataset.entry(i).image_file for i in ids])
        items = []
        for entry_id, thumb in zip(ids, thumbs, strict=True):
            mark = "✔ " if entry_id in self.selected else ""
            label = mark + dataset.relative(entry_id)
            if isinstance(thumb, ImageLoadError):
                items.append(GalleryItem(entry_id, None, label, str(thumb)))
            else:
                items.append(GalleryItem(entry_id, str(thumb), label))
        return items

    def id_at(self, index_on_page: int) -> int | None:
        ids = self.page_ids()
        return ids[index_on_page] if 0 <= index_on_page < len(ids) else None

    def tag_counts(self) -> list[tuple[str, int]]:
        """Tags of the visible images with how many of them have each, most frequent first."""
        dataset = self.require()
        counts = dataset.frequencies(None if self.filter.is_empty else self.visible)
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))

    # --- selection --------------------------------------------------------------------------------------------

    def toggle(self, entry_id: int) -> None:
        self.selected.symmetric_difference_update({entry_id})

    def select_all(self) -> None:
        self.selected = set(self.visible)

    def invert(self) -> None:
        self.selected = set(invert_selection(self.selected, self.visible))

    def clear_selection(self) -> None:
        self.selected.clear()

    def target_ids(self, scope: Scope) -> list[int] | None:
        """The entries a batch edit works on; None means every entry (fastest path through the index)."""
        if scope == "all":
            return None
        if scope == "selected":
            if not self.selected:
                raise DatasetError(
                    "no image is selected; click images in the gallery to select them, or edit the filtered set"
                )
            return sorted(self.selected)
        return None if self.filter.is_empty else list(self.visible)

    # --- edits ------------------------------------------------------------------------------------------------

    def apply(self, operation: Operation, scope: Scope = "filtered") -> str:
        dataset = self.require()
        changed = dataset.apply(operation, self.target_ids(scope))
        self.refresh()
        return (
            f"{operation.label}: {changed} caption(s) changed" if changed else f"{operation.label}: nothing to change"
        )

    def undo(self) -> str:
        label = self.require().undo()
        self.refresh()
        return f"undone: {label}" if label else "nothing to undo"

    def redo(self) -> str:
        label = self.require().redo()
        self.refresh()
        return f"redone: {label}" if label else "nothing to redo"

    def save(self, *, backup: bool = False, overwrite_changed: bool = False) -> SaveReport:
        return save_dataset(self.require(), backup=backup, overwrite_changed=overwrite_changed)

    # --- the per-image editor ---------------------------------------------------------------------------------

    def select_image(self, entry_id: int | None) -> None:
        self.current = entry_id

    def step(self, delta: int) -> int | None:
        """Move the per-image editor to the next (+1) or previous (-1) visible image, wrapping around."""
        if not self.visible:
            self.current = None
            return None
        if self.current in self.visible:
            position = (self.visible.index(self.current) + delta) % len(self.visible)
        else:
            position = 0
        self.current = self.visible[position]
        self.page = position // self.page_size
        return self.current

    def edit_current(self, text: str) -> str:
        dataset = self.require()
        if self.current is None:
            raise DatasetError("no image is open in the editor; click one in the gallery")
        changed = dataset.set_caption(self.current, text)
        self.refresh()
        return "caption changed" if changed else "caption unchanged"

    def add_to_current(self, tags: Iterable[str] | str) -> str:
        return self._current_op(AddTags(tuple(split_tags(tags) if isinstance(tags, str) else tags), "end"))

    def remove_from_current(self, tags: Iterable[str] | str) -> str:
        return self._current_op(RemoveTags(tuple(split_tags(tags) if isinstance(tags, str) else tags)))

    def _current_op(self, operation: Operation) -> str:
        dataset = self.require()
        if self.current is None:
            raise DatasetError("no image is open in the editor; click one in the gallery")
        changed = dataset.apply(operation, [self.current])
        self.refresh()
        return operation.label if changed else f"{operation.label}: nothing to change"

    def trash_current(self, trash_dir: str | os.PathLike | None = None) -> str:
        """Move the current image, its caption and its caption backup to the trash; the editor moves on."""
        dataset = self.require()
        if self.current is None:
            raise DatasetError("no image is open in the editor; click one in the gallery")
        entry = dataset.entry(self.current)
        files = [entry.image_file]
        shared = any(e.caption_file == entry.caption_file for e in dataset.entries.values() if e.id != entry.id)
        if not shared:  # a caption that another image also uses (a.png / a.jpg) stays with that image
            files += [entry.caption_file, entry.caption_file + ".bak"]
        trash = Path(trash_dir) if trash_dir else default_trash_dir(dataset.root)
        result = move_to_trash(files, dataset.root, trash)
        position = self.visible.index(self.current) if self.current in self.visible else 0
        dataset.remove_entry(self.current)
        self.refresh()
        self.current = self.visible[min(position, len(self.visible) - 1)] if self.visible else None
        return f"moved {len(result.moved)} file(s) to {trash}"

    def owns_file(self, path: str | os.PathLike) -> bool:
        """True if ``path`` is an image of the open dataset (the only files the tab's HTTP route may serve)."""
        if self.dataset is None:
            return False
        return self.dataset.find(os.path.abspath(path)) is not None
