"""The bootstrap loop's phases on the tiny model: wall seconds per phase and round, and the share of each round spent
outside the model (hashing, scoring, captions, file work) — the loop's own overhead, which should stay under 10%.

    .venv/bin/python bench/bench_bootstrap.py [--targets 6,8] [--seeds-per-view 2] [--views "from side, from behind"]

Runs ``python -m lib_lora_train bootstrap`` in-process on a tiny random SD1 model with the tests' probe tagger
(tags decided by colour), in a temporary folder, and prints one line per phase and a summary per round.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="6,8")
    parser.add_argument("--seeds-per-view", default="2")
    parser.add_argument("--views", default="from side, from behind")
    parser.add_argument("--resolution", default="64")
    args = parser.parse_args()

    from PIL import Image
    from tagger_graphs import make_model_folder

    from lib_lora_train.bootstrap.rounds import PHASES, read_state
    from lib_lora_train.cli import main as cli
    from lib_lora_train.hosts.tiny_model import save_tiny_model
    from lib_lora_train.store import ProjectStore

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        picture = Image.new("RGB", (128, 128), (200, 40, 40))
        picture.paste((40, 40, 200), (64, 0, 128, 64))
        picture.save(work / "start.png")
        base, tagger = save_tiny_model(work / "tiny"), make_model_folder(work / "probe-tagger")
        started = time.perf_counter()
        code = cli(["bootstrap", "--dataset", str(work / "start.png"), "--crop", "4", "--base", str(base),
                    "--project", "bench", "--outputs", str(work / "out"), "--targets", args.targets,
                    "--activation", "benchchan", "--views", args.views, "--seeds-per-view", args.seeds_per_view,
                    "--tagger", str(tagger), "--render-steps", "4", "--resolution", args.resolution,
                    "--min-bucket-side", "64", "--max-bucket-side", "128", "--batch-size", "2", "--rank", "4",
                    "--epochs", "2", "--max-steps", "4", "--mixed-precision", "no", "--device", "cpu"])  # fmt: skip
        total = time.perf_counter() - started
        store = ProjectStore(work / "out")
        timings = {}
        for info in store.list_versions("bench"):
            for row in read_state(store.version("bench", info.name)).timings:
                timings[(row["round"], row["phase"])] = row
    print(f"exit {code}, whole loop {total:.1f} s (model loading and start included)")
    rounds: dict[int, list[dict]] = {}
    for (round_number, _), row in sorted(timings.items(), key=lambda kv: (kv[0][0], PHASES.index(kv[0][1]))):
        rounds.setdefault(round_number, []).append(row)
        print(f"round {round_number} {row['phase']:<8} {row['seconds']:7.2f} s  (model {row['model_seconds']:.2f} s)")
    for round_number, rows in rounds.items():
        seconds = sum(r["seconds"] for r in rows)
        outside = seconds - sum(r["model_seconds"] for r in rows)
        print(f"round {round_number}: {seconds:.2f} s, outside the model {outside:.2f} s = {outside / seconds:.1%}")
    print(json.dumps({"total_s": round(total, 2), "rounds": len(rounds)}))


if __name__ == "__main__":
    main()
