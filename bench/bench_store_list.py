"""Benchmark: list a store of 50 projects x 10 versions x 20 checkpoints (1 MiB sparse files), as the Train Tools tab does.

Prints one line: projects, versions, checkpoint files, listing time. Listing reads folder entries and the small
version.json files only, so its time does not grow with checkpoint size.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_lora_train.store import ProjectStore  # noqa: E402


def main(projects: int = 50, versions: int = 10, checkpoints: int = 20) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = ProjectStore(Path(tmp) / "train_tools")
        for p in range(projects):
            for v in range(versions):
                paths = store.create_version(f"project{p:02d}", f"v{v}")
                for epoch in range(1, checkpoints + 1):
                    with paths.checkpoint_file(epoch).open("wb") as handle:
                        handle.truncate(1 << 20)  # sparse: 1 MiB as listed, no disk used
        start = time.perf_counter()
        listing = store.list_projects()
        elapsed = time.perf_counter() - start
    n_versions = sum(len(p.versions) for p in listing)
    n_files = sum(len(v.checkpoints) for p in listing for v in p.versions)
    print(
        f"store listing: {len(listing)} projects, {n_versions} versions, {n_files} checkpoints "
        f"({n_files} MiB) listed in {elapsed * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
