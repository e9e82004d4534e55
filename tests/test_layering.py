"""The rings of DESIGN.md section 2: the core imports no host and no gradio; the tabs (``ui/``) may use gradio but
reach a host only through ``ui.runtime``, never a host's ``modules`` or a host adapter; each host adapter (``webui/``
for A1111, ``standalone/``) stays out of the other; scripts/ stays thin."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "lib_lora_train"
UI = CORE / "ui"
WEBUI = CORE / "webui"
STANDALONE = CORE / "standalone"
FORGE = CORE / "forge"
SHARED = WEBUI / "shared"  # the modules API that A1111 and Forge share: the one part of webui/ Forge may use
RINGS = (UI, WEBUI, STANDALONE, FORGE)
FORBIDDEN = {"modules", "gradio", "launch", "scripts"}
HOST_ONLY = {"modules", "launch", "scripts"}  # what a host's own process provides (A1111 and Forge alike)


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _imported_roots(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _imported_modules(path)}


def _offenders(folder: Path, forbidden_roots: set[str], forbidden_packages: tuple[str, ...] = ()) -> dict:
    offenders = {}
    for path in folder.rglob("*.py"):
        if folder == CORE and any(ring in path.parents for ring in RINGS):
            continue
        names = _imported_modules(path)
        bad = {n.split(".")[0] for n in names} & forbidden_roots
        bad |= {n for n in names for p in forbidden_packages if n == p or n.startswith(p + ".")}
        if bad:
            offenders[str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)] = sorted(bad)
    return offenders


ENTRY_POINTS = {CORE / "cli.py", CORE / "__main__.py"}  # the command line: `ui` starts the standalone app


def test_core_never_imports_the_webui_or_gradio():
    hosts = ("lib_lora_train.ui", "lib_lora_train.webui", "lib_lora_train.standalone", "lib_lora_train.forge")
    offenders = _offenders(CORE, FORBIDDEN, hosts)
    entry = {str(p.relative_to(ROOT)) for p in ENTRY_POINTS}
    assert {k: v for k, v in offenders.items() if k not in entry} == {}, f"core files import a host: {offenders}"
    for name in entry:  # the command line may start the standalone app, and nothing else of the rings
        assert all(m.startswith("lib_lora_train.standalone") for m in offenders.get(name, [])), offenders[name]


def test_tabs_reach_a_host_only_through_the_runtime():
    offenders = _offenders(UI, HOST_ONLY, ("lib_lora_train.webui", "lib_lora_train.standalone", "lib_lora_train.forge"))
    assert offenders == {}, f"tab files import a host directly: {offenders}"


def test_each_host_adapter_stays_out_of_the_other():
    assert _offenders(WEBUI, set(), ("lib_lora_train.standalone", "lib_lora_train.forge")) == {}
    # Forge keeps A1111's modules API: what both adapters use of it is in webui/shared/, which knows neither adapter
    a1111_only = tuple(f"lib_lora_train.webui.{p.stem}" for p in WEBUI.glob("*.py") if p.stem != "__init__")
    assert _offenders(FORGE, set(), (*a1111_only, "lib_lora_train.standalone")) == {}
    assert _offenders(SHARED, set(), (*a1111_only, "lib_lora_train.forge", "lib_lora_train.standalone")) == {}
    # the standalone adapter is diffusers and files: its page and gradio handlers live in ui/ (page, gpu_call)
    assert _offenders(STANDALONE, FORBIDDEN, ("lib_lora_train.webui", "lib_lora_train.forge")) == {}


def test_the_tab_packages_are_one_per_tab():
    tabs = {p.name for p in UI.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert tabs == {"tagger", "tag_editor", "train", "compare"}
    assert all((UI / tab / "tab.py").is_file() for tab in tabs)


def test_ring_check_sees_a_violation(tmp_path):
    (tmp_path / "x.py").write_text(
        "from modules import shared\nfrom lib_lora_train.webui.runtime import WebUIRuntime\n"
    )
    found = _offenders(tmp_path, HOST_ONLY, ("lib_lora_train.webui",))
    assert list(found.values()) == [["lib_lora_train.webui.runtime", "lib_lora_train.webui.runtime.WebUIRuntime",
                                     "modules"]]  # fmt: skip


def test_layering_check_sees_a_violation(tmp_path):
    # guard against a checker that passes vacuously
    bad = tmp_path / "bad.py"
    bad.write_text("import gradio as gr\nfrom modules import shared\n")
    assert _imported_roots(bad) >= {"gradio", "modules"}


def test_scripts_folder_holds_only_thin_entry_points():
    for path in (ROOT / "scripts").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
        assert len(path.read_text(encoding="utf-8").splitlines()) < 150, f"{path.name} should only register callbacks"
        assert not classes, f"{path.name} defines classes; library code belongs in lib_lora_train"
