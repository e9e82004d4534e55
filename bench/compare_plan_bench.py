"""Epoch Compare planning cost: expand a large plan, build and verify its X/Y/Z strings, compose one grid.

Prints one line: cells planned, ms to expand, ms for the S/R hand-offs (simulated against every cell), ms to draw a
20 x 12 grid of 64 px cells with Pillow.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from lib_lora_train.compare.grid import compose_grid  # noqa: E402
from lib_lora_train.compare.plan import ComparePlan, epoch_entries, expand, parse_weights  # noqa: E402
from lib_lora_train.compare.xyz import plan_handoffs  # noqa: E402


def main() -> None:
    checkpoints = [(e, Path(f"/x/alice-v1-{e:06d}.safetensors")) for e in range(1, 21)]
    plan = ComparePlan(
        "alice", "v1", epoch_entries(checkpoints), parse_weights("0-1:0.1"),
        ["alice_x, solo, smile, outdoors", "alice_x, from side, (sitting:1.2), <lora:style:0.5>"], [1, 2, 3, 4],
    )  # fmt: skip
    t0 = time.perf_counter()
    grids = expand(plan)
    t1 = time.perf_counter()
    handoffs = plan_handoffs(plan, grids)
    t2 = time.perf_counter()
    grid = grids[0]
    tiles = [
        [Image.new("RGB", (64, 64), (r * 12, c * 20, 90)) for c in range(len(row))] for r, row in enumerate(grid.cells)
    ]
    compose_grid(tiles, grid.row_labels, grid.col_labels)
    t3 = time.perf_counter()
    cells = sum(len(g.all_cells()) for g in grids)
    print(
        f"compare plan: {cells} cells in {len(grids)} grids, expand {1000 * (t1 - t0):.1f} ms, "
        f"{len(handoffs)} X/Y/Z hand-offs {1000 * (t2 - t1):.1f} ms, 20x{len(grid.col_labels)} grid draw {1000 * (t3 - t2):.1f} ms"
    )


if __name__ == "__main__":
    main()
