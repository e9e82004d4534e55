"""Putting one version's LoRA into a prompt exactly once, as ``<lora:NAME:WEIGHT>``.

The WebUI finds extra networks with ``<(\\w+):([^>]+)>`` and splits the inside on ``:`` (name, then multipliers),
so a LoRA name can hold neither ``:`` nor ``>``. A prompt the user wrote may already carry a tag for this version
(copied from a LoRA card, or from an earlier comparison); that tag is rewritten in place instead of adding a second
one, because two tags of the same version would apply it twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# the WebUI's own extra-network pattern, restricted to the "lora" kind (and its old alias "lyco")
_LORA_TAG = re.compile(r"<(lora|lyco):([^>]+)>", re.IGNORECASE)


class LoraTagError(ValueError):
    """A LoRA name or weight that cannot be written into a prompt."""


def format_weight(weight: float) -> str:
    """Short, stable text for a weight: 1.0 -> "1", 0.50 -> "0.5", 0.125 -> "0.125" (at most 4 decimals).

    Every place that writes a weight (cell prompts, grid labels, X/Y/Z values) uses this, so that the S/R strings
    reproduce the rendered prompts character for character.
    """
    text = f"{round(float(weight), 4):.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_lora_tag(name: str, weight: float) -> str:
    """``<lora:name:weight>``; raises LoraTagError for names the WebUI could not parse back."""
    if not name or any(ch in name for ch in ":<>\n"):
        raise LoraTagError(
            f"LoRA name {name!r} cannot be used in a prompt: it must not contain ':', '<', '>' or newlines"
        )
    return f"<lora:{name}:{format_weight(weight)}>"


def is_version_name(name: str, version_names: Iterable[str]) -> bool:
    """True when ``name`` (a LoRA name in a prompt) is one of this version's files, ignoring case."""
    wanted = name.strip().lower()
    return any(wanted == known.lower() for known in version_names)


def with_lora(prompt: str, name: str, weight: float, version_names: Iterable[str]) -> str:
    """Return ``prompt`` with exactly one tag of this version: ``<lora:name:weight>``.

    ``version_names`` are all names under which this version's files may appear (every epoch's file stem and the
    final/published name). The first tag of one of those names is rewritten in place, keeping any further
    parameters after the weight (``:unet=…``); later tags of the version are removed. Without such a tag the new tag
    is appended after a space: the WebUI strips the tag before encoding, so the text the model sees is unchanged.
    """
    names = list(version_names) + [name]
    new_tag = format_lora_tag(name, weight)
    replaced = False

    def rewrite(match: re.Match[str]) -> str:
        nonlocal replaced
        parts = match.group(2).split(":")
        if not is_version_name(parts[0], names):
            return match.group(0)
        if replaced:
            return ""
        replaced = True
        extra = parts[2:]  # keep unet=/dyn= style parameters the user set
        return new_tag[:-1] + "".join(":" + p for p in extra) + ">"

    result = _LORA_TAG.sub(rewrite, prompt)
    if replaced:
        return result
    stripped = prompt.rstrip()
    return f"{stripped} {new_tag}" if stripped else new_tag


def lora_names_in(prompt: str) -> list[str]:
    """Names of all LoRA tags in ``prompt`` in order of appearance."""
    return [m.group(2).split(":")[0].strip() for m in _LORA_TAG.finditer(prompt)]


def strip_lora_tags(prompt: str) -> str:
    """The prompt without any ``<lora:…>`` tag (what the tagger-based scoring compares against)."""
    return _LORA_TAG.sub("", prompt)
