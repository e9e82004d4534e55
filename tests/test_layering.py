"""The core must stay free of the WebUI and of gradio, and scripts/ must stay thin (DESIGN.md section 2)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "lib_lora_train"
HOST_PACKAGE = CORE / "webui"
FORBIDDEN = {"modules", "gradio", "launch", "scripts"}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_never_imports_the_webui_or_gradio():
    offenders = {}
    for path in CORE.rglob("*.py"):
        if HOST_PACKAGE in path.parents:
            continue
        bad = _imported_roots(path) & FORBIDDEN
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}, f"core files import host packages: {offenders}"


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
