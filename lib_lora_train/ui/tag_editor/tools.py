"""Handlers of the tab's helper panels: suggestions (meta tags, traits, synonyms) and image fixes.

Suggestions only fill check boxes and lists; nothing changes until the user presses the button that applies the
checked items (each one an undoable operation).
"""

from __future__ import annotations

import gradio as gr

from lib_lora_train.tag_editor.captions import parse_tag_list
from lib_lora_train.tag_editor.dataset import DatasetError
from lib_lora_train.tag_editor.image_fixes import (
    centered_crop_box,
    crop_image,
    flag_extreme_aspect,
    flatten_transparent_images,
    group_near_duplicates,
    has_transparency,
    hash_images,
    image_size,
)
from lib_lora_train.tag_editor.operations import AddTags, MergeTags, RemoveTags
from lib_lora_train.tag_editor.suggestions import find_meta_tags, suggest_synonym_groups, suggest_trait_tags
from lib_lora_train.tag_editor.trash import default_trash_dir
from lib_lora_train.ui.tag_editor.handlers import EDITOR_SIZE, SESSION, VIEW_SIZE, _scope, editor, guarded, view

# results of the last "find" of each panel, so that the apply buttons act on exactly what was shown
_found: dict[str, list] = {"synonyms": [], "transparent": [], "wide": [], "duplicates": []}


def _scope_ids(scope_label: str) -> list[int]:
    ids = SESSION.target_ids(_scope(scope_label))
    return SESSION.require().ids() if ids is None else ids


def _originals_dir():
    return default_trash_dir(SESSION.require().root) / "originals"


# --- suggestions ------------------------------------------------------------------------------------------------


@guarded(2)
def find_meta(meta_list: str):
    found = find_meta_tags(SESSION.require(), parse_tag_list(meta_list or ""))
    tags = [tag for tag, _ in found]
    message = ", ".join(f"{tag} ({count})" for tag, count in found) or "no meta tags found"
    return gr.update(choices=tags, value=tags), message


@guarded(2)
def find_traits(scope: str, activation: str, min_share: float):
    dataset = SESSION.require()
    ids = SESSION.target_ids(_scope(scope))
    suggestions = suggest_trait_tags(dataset, ids, min_share=float(min_share), keep=parse_tag_list(activation or ""))
    message = "\n".join(f"- **{s.tag}** — {s.reason}" for s in suggestions) or "no tag is in that many images"
    # unchecked: the user decides which of these are really the character's traits
    return gr.update(choices=[s.tag for s in suggestions], value=[]), message


@guarded(VIEW_SIZE + EDITOR_SIZE)
def remove_checked(scope: str, checked: list[str], activation: str = ""):
    if not checked:
        raise DatasetError("check the tags to remove first")
    messages = [SESSION.apply(RemoveTags(tuple(checked)), _scope(scope))]
    activation_tags = parse_tag_list(activation or "")
    if activation_tags:
        messages.append(SESSION.apply(AddTags(tuple(activation_tags), "front"), _scope(scope)))
    return (*editor(), *view("; ".join(messages)))


@guarded(3)
def find_synonyms():
    groups = suggest_synonym_groups(SESSION.require().frequencies())
    _found["synonyms"] = groups
    names = [f"{i + 1}: {' / '.join(g.tags)}" for i, g in enumerate(groups)]
    message = "\n".join(f"{i + 1}. **{' / '.join(g.tags)}** → {g.target} ({g.reason})" for i, g in enumerate(groups))
    return (
        gr.update(choices=names, value=names[0] if names else None),
        groups[0].target if groups else "",
        (message or "no synonym groups found"),
    )


def synonym_target(choice: str) -> str:
    group = _group_of(choice)
    return group.target if group else ""


def _group_of(choice: str | None):
    if not choice:
        return None
    number = int(choice.split(":", 1)[0]) - 1
    groups = _found["synonyms"]
    return groups[number] if 0 <= number < len(groups) else None


@guarded(VIEW_SIZE + EDITOR_SIZE)
def merge_group(scope: str, choice: str, target: str):
    group = _group_of(choice)
    if group is None:
        raise DatasetError("press Suggest synonyms, then pick a group")
    message = SESSION.apply(MergeTags(group.tags, target or group.target), _scope(scope))
    return (*editor(), *view(message))


# --- image fixes ------------------------------------------------------------------------------------------------


def _gallery(ids: list[int], labels: dict[int, str] | None = None):
    dataset = SESSION.require()
    thumbs = SESSION.thumbnails.get_many([dataset.entry(i).image_file for i in ids])
    return [
        (str(t), (labels or {}).get(i, dataset.relative(i)))
        for i, t in zip(ids, thumbs, strict=True)
        if not isinstance(t, Exception)
    ]


@guarded(2)
def find_transparent(scope: str):
    dataset = SESSION.require()
    ids = [i for i in _scope_ids(scope) if has_transparency(dataset.entry(i).image_file)]
    _found["transparent"] = ids
    return _gallery(ids), f"{len(ids)} transparent image(s)"


@guarded(VIEW_SIZE + EDITOR_SIZE + 1)
def flatten_found():
    ids = _found["transparent"]
    if not ids:
        raise DatasetError("press Find transparent images first")
    report = flatten_transparent_images(SESSION.require(), ids, _originals_dir())
    _found["transparent"] = []
    message = f"flattened {len(report.fixed)} image(s) onto white (originals kept in {_originals_dir()})"
    if report.failures:
        message += "; " + "; ".join(report.failures[:3])
    SESSION.refresh()
    return [], *editor(), *view(message)


@guarded(3)
def find_wide(scope: str, limit: float):
    flags = flag_extreme_aspect(SESSION.require(), _scope_ids(scope), float(limit))
    _found["wide"] = [f.entry_id for f in flags]
    names = [f"{SESSION.dataset.relative(f.entry_id)} ({f.width}x{f.height}, {f.ratio:.1f}:1)" for f in flags]
    return gr.update(choices=names, value=None), _gallery(_found["wide"]), f"{len(flags)} image(s) beyond {limit}:1"


@guarded(6)
def pick_wide(choice: str, limit: float):
    if not choice:  # the list was just refilled: nothing picked yet
        return (*([gr.update()] * 5), "")
    names = [SESSION.require().relative(i) for i in _found["wide"]]
    name = (choice or "").rsplit(" (", 1)[0]
    if name not in names:
        raise DatasetError("pick an image from the list")
    entry_id = _found["wide"][names.index(name)]
    SESSION.select_image(entry_id)
    width, height = image_size(SESSION.dataset.entry(entry_id).image_file)
    left, top, right, bottom = centered_crop_box(width, height, float(limit))
    return left, top, right, bottom, SESSION.dataset.entry(entry_id).image_file, f"{width}x{height}"


@guarded(VIEW_SIZE + EDITOR_SIZE)
def crop_current(left, top, right, bottom):
    dataset = SESSION.require()
    if SESSION.current is None:
        raise DatasetError("pick an image to crop first")
    entry = dataset.entry(SESSION.current)
    kept = crop_image(entry.image_file, (left, top, right, bottom), dataset.root, _originals_dir())
    return (*editor(), *view(f"cropped {dataset.relative(entry.id)}; original kept as {kept}"))


@guarded(2)
def find_duplicates(scope: str, method: str, distance: int):
    dataset = SESSION.require()
    hashes, failures = hash_images(dataset, _scope_ids(scope), method)
    groups = group_near_duplicates(hashes, int(distance))
    _found["duplicates"] = [i for group in groups for i in group]
    labels = {i: f"group {n + 1}: {dataset.relative(i)}" for n, group in enumerate(groups) for i in group}
    message = f"{len(groups)} group(s) of near-duplicates among {len(hashes)} image(s)"
    if failures:
        message += f"; {len(failures)} unreadable: " + "; ".join(failures[:3])
    return _gallery(_found["duplicates"], labels), message


@guarded(VIEW_SIZE + EDITOR_SIZE)
def duplicate_clicked(evt: gr.SelectData):
    ids = _found["duplicates"]
    index = int(evt.index)
    if not 0 <= index < len(ids) or ids[index] not in SESSION.require().entries:
        raise DatasetError("that image is gone; search for duplicates again")
    SESSION.select_image(ids[index])
    return (*editor(), *view(f"{SESSION.dataset.relative(ids[index])} opened in the image editor"))
