"""How long install.py's launch-time check takes when everything is present (the WebUI runs it at every launch).

Prints one line: milliseconds for the metadata look-ups and the plan, averaged over runs, and what it would install
in this environment.
"""

import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(runs: int = 20) -> None:
    spec = importlib.util.spec_from_file_location("lora_train_tools_install", ROOT / "install.py")
    install = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = install
    spec.loader.exec_module(install)
    started = time.perf_counter()
    for _ in range(runs):
        installed = install.installed_versions(install.packages_to_look_up())
        plan = install.plan_installs(installed, cuda=False)
    elapsed_ms = (time.perf_counter() - started) / runs * 1000
    wanted = ", ".join(p.requirement for p in plan) or "nothing"
    print(
        f"install.py check: {elapsed_ms:.1f} ms per launch ({len(installed)} packages found), would install: {wanted}"
    )


if __name__ == "__main__":
    main()
