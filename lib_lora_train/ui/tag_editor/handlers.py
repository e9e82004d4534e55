"""The Dataset Tag Editor tab's event handlers: plain values in, component values out.

One editor state per WebUI process (the WebUI is a single-user tool, and the Train Tools tab and the HTTP route
need to know which dataset is open). Every handler that changes the view returns the same ``VIEW`` outputs
so the gallery, the tag list, the autocomplete list and the status line always agree.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import gradio as gr

from lib_lora_train.tag_editor.captions import parse_tag_list
from lib_lora_train.tag_editor.dataset import DatasetError
from lib_lora_train.tag_editor.filters import TagFilter
from lib_lora_train.tag_editor.operations import (
    AddTags,
    MergeTags,
    RegexReplace,
    RemoveDuplicates,
    RemoveTags,
    ReplaceTag,
    SortTags,
    Truncate,
)
from lib_lora_train.tag_editor.session import EditorSession
from lib_lora_train.ui.runtime import current

# how many values the view handlers return: gallery, page number, page label, tag table, tags JSON, status
VIEW_SIZE = 6
EDITOR_SIZE = 3  # full image, path line, caption text


def thumbnail_dir() -> Path:
    """In the host's cache folder (the WebUI's is kept between restarts).

    No part of the path may start with a dot: gradio 3.41 refuses to serve such files.
    """
    return current().cache_dir() / "lora_train_tools_thumbnails"


SESSION = EditorSession(thumbnail_dir())


def current_dataset_folder() -> str | None:
    """The folder open in the Dataset Tag Editor, for the Train Tools tab ("train on what I just edited")."""
    return str(SESSION.dataset.root) if SESSION.dataset is not None else None


def guarded(outputs: int):
    """Turn expected errors (bad input, a missing folder, a bad regex) into a status message instead of a trace.

    The status is always the last output; the others are left as they are.
    """

    def wrap(fn):
        # functools.wraps keeps the signature and annotations: gradio reads them to pass gr.SelectData
        @functools.wraps(fn)
        def run(*args):
            try:
                return fn(*args)
            except (DatasetError, ValueError, OSError) as exc:
                return (*([gr.update()] * (outputs - 1)), f"⚠ {exc}")

        return run

    return wrap


def view(message: str = "", page: int | None = None, *, thumbnails: bool = True):
    """Values for the ``VIEW`` outputs; without ``thumbnails`` the gallery is left as it is (filled by a
    follow-up event, so that opening a big folder shows its counts at once)."""
    if SESSION.dataset is None:
        return [], 1, "no dataset", [], "[]", message
    if thumbnails:
        items = SESSION.page_items(page)
        gallery = [
            (item.thumbnail or _broken_placeholder(), item.label + (f" — {item.error}" if item.error else ""))
            for item in items
        ]
    else:
        SESSION.page_ids(page)
        gallery = gr.update()
    dataset = SESSION.dataset
    label = (
        f"page {SESSION.page + 1} / {SESSION.page_count} — {len(SESSION.visible)} of {len(dataset)} images shown, "
        f"{len(SESSION.selected)} selected, {len(dataset.dirty_ids())} unsaved"
    )
    table = [[tag, count] for tag, count in SESSION.tag_counts()]
    return gallery, SESSION.page + 1, label, table, _tags_json(), message


_last_tags_json = {"text": None}


def initial_tags_json() -> str:
    """The autocomplete list when a browser opens the page (the hidden textbox's value is computed then)."""
    return json.dumps(SESSION.dataset.all_tags()) if SESSION.dataset is not None else "[]"


def _tags_json():
    """The autocomplete list for the JS, sent only when it changed (it can hold tens of thousands of tags)."""
    text = json.dumps(SESSION.require().all_tags())
    if text == _last_tags_json["text"]:
        return gr.update()
    _last_tags_json["text"] = text
    return text


def _broken_placeholder() -> str:
    """A grey square shown in place of an image that cannot be read (the label says why)."""
    path = thumbnail_dir() / "unreadable.png"
    if not path.exists():
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (128, 128, 128)).save(path)
    return str(path)


def editor():
    """Values for the per-image editor: the full image, its path, its caption."""
    dataset = SESSION.dataset
    if dataset is None or SESSION.current is None:
        return None, "", ""
    entry = dataset.entry(SESSION.current)
    note = f"`{entry.image_file}`" + (f" — ⚠ {entry.error}" if entry.error else "")
    return entry.image_file, note, entry.caption


# --- handlers ------------------------------------------------------------------------------------------------


@guarded(VIEW_SIZE + EDITOR_SIZE)
def load(folder: str, recursive: bool, extension: str, discard_unsaved: bool = False):
    if not folder or not folder.strip():
        raise DatasetError("type the path of a dataset folder first")
    status = SESSION.open(
        folder, recursive=recursive, caption_extension=extension or ".txt", discard_unsaved=bool(discard_unsaved)
    )
    _last_tags_json["text"] = None  # a new dataset: always send its tags
    return (*editor(), *view(status, 0, thumbnails=False))


@guarded(VIEW_SIZE)
def apply_filter(include, include_mode, exclude, exclude_mode, text, regex, without_caption):
    SESSION.require()
    SESSION.set_filter(
        TagFilter(
            include=tuple(parse_tag_list(include or "")),
            include_mode=include_mode.lower(),
            exclude=tuple(parse_tag_list(exclude or "")),
            exclude_mode=exclude_mode.lower(),
            text=text or "",
            regex=bool(regex),
            without_caption=bool(without_caption),
        )
    )
    return view(f"{len(SESSION.visible)} image(s) match")


@guarded(VIEW_SIZE)
def go_to_page(page):
    return view("", int(page or 1) - 1)


def thumbnails_after_load(page):
    """The follow-up of a load: the first page's thumbnails, leaving the load's own status line (its counts, its
    problems, "not saved; tick Discard…") in place; the outputs are ``VIEW`` without the status."""
    try:
        return view("", int(page or 1) - 1)[:-1]
    except (DatasetError, ValueError, OSError):
        return tuple(gr.update() for _ in range(VIEW_SIZE - 1))


@guarded(VIEW_SIZE)
def step_page(page, delta: int):
    return view("", int(page or 1) - 1 + delta)


@guarded(VIEW_SIZE + EDITOR_SIZE)
def gallery_click(toggle_mode: bool, evt: gr.SelectData):
    entry_id = SESSION.id_at(int(evt.index))
    if entry_id is None:
        raise DatasetError("that image is no longer on this page; press Filter to refresh")
    if toggle_mode:
        SESSION.toggle(entry_id)
    SESSION.select_image(entry_id)
    return (*editor(), *view(""))


@guarded(VIEW_SIZE)
def selection(action: str):
    SESSION.require()
    {"all": SESSION.select_all, "invert": SESSION.invert, "clear": SESSION.clear_selection}[action]()
    return view(f"{len(SESSION.selected)} selected")


def tag_clicked(include: str, evt: gr.SelectData) -> str:
    """Clicking a tag in the tag list adds it to the include filter."""
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    table = SESSION.tag_counts() if SESSION.dataset is not None else []
    if not 0 <= row < len(table):
        return include
    tags = parse_tag_list(include or "")
    if table[row][0] not in tags:
        tags.append(table[row][0])
    return ", ".join(tags)


def _batch(make_operation):
    @guarded(VIEW_SIZE + EDITOR_SIZE)
    def run(scope, *values):
        message = SESSION.apply(make_operation(*values), _scope(scope))
        return (*editor(), *view(message))

    return run


def _scope(label: str) -> str:
    return {"filtered images": "filtered", "selected images": "selected", "all images": "all"}[label]


add_tags = _batch(
    lambda tags, position, keep: AddTags(
        tuple(parse_tag_list(tags or "")), "front" if position == "front" else "end", int(keep or 0)
    )
)
remove_tags = _batch(lambda tags: RemoveTags(tuple(parse_tag_list(tags or ""))))
replace_tag = _batch(lambda old, new: ReplaceTag(old or "", tuple(parse_tag_list(new or ""))))
merge_tags = _batch(lambda sources, target: MergeTags(tuple(parse_tag_list(sources or "")), target or ""))
regex_replace = _batch(lambda pattern, repl, whole: RegexReplace(pattern or "", repl or "", bool(whole)))
remove_duplicates = _batch(lambda: RemoveDuplicates())
sort_tags = _batch(
    lambda by, keep: SortTags(
        "frequency" if by == "frequency" else "name", int(keep or 0), SESSION.require().frequencies()
    )
)
truncate = _batch(lambda count: Truncate(int(count or 0)))


@guarded(VIEW_SIZE + EDITOR_SIZE)
def undo():
    message = SESSION.undo()
    return (*editor(), *view(message))


@guarded(VIEW_SIZE + EDITOR_SIZE)
def redo():
    message = SESSION.redo()
    return (*editor(), *view(message))


@guarded(VIEW_SIZE)
def save(backup: bool, overwrite_changed: bool = False):
    report = SESSION.save(backup=bool(backup), overwrite_changed=bool(overwrite_changed))
    return view(("✔ " if report.ok else "⚠ ") + report.summary())


# --- per-image editor ------------------------------------------------------------------------------------------


@guarded(VIEW_SIZE + EDITOR_SIZE)
def step_image(delta: int):
    SESSION.require()
    SESSION.step(delta)
    return (*editor(), *view(""))


@guarded(VIEW_SIZE + EDITOR_SIZE)
def edit_caption(text: str):
    message = SESSION.edit_current(text or "")
    return (*editor(), *view(message))


@guarded(VIEW_SIZE + EDITOR_SIZE + 1)
def quick_add(tags: str):
    message = SESSION.add_to_current(tags or "")
    return ("", *editor(), *view(message))


@guarded(VIEW_SIZE + EDITOR_SIZE + 1)
def quick_remove(tags: str):
    message = SESSION.remove_from_current(tags or "")
    return ("", *editor(), *view(message))


@guarded(VIEW_SIZE + EDITOR_SIZE)
def trash_current():
    message = SESSION.trash_current()
    return (*editor(), *view(message))
