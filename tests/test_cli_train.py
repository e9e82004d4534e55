"""``python -m lib_lora_train train``: options, settings precedence, errors, and a real run into the store."""

import dataclasses
import json
from pathlib import Path

import pytest
from safetensors import safe_open

from lib_lora_train.cli import build_parser, main, settings_from_args
from lib_lora_train.hosts.tiny_model import save_tiny_model, write_tiny_dataset
from lib_lora_train.settings import TrainSettings

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "fixtures" / "diffusers-tiny-sd1"
STABLE = "--dataset --base --project --version --outputs --network --rank --alpha --resolution --batch-size --epochs --max-steps --save-every --unet-lr --te-lr --seed --settings".split()


def _parse(*extra):
    return build_parser().parse_args(["train", "--base", "m", "--project", "p", "--version", "v", *extra])


def test_help_lists_the_stable_flags(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in STABLE:
        assert flag in text, flag


def test_every_setting_is_reachable_from_the_command_line():
    parser_dests = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert {f.name for f in dataclasses.fields(TrainSettings)} <= parser_dests
    args = _parse(
        "--rank", "4", "--alpha", "2", "--no-shuffle-tags", "--flip", "--sample-prompts", "a", "b", "--network", "locon"
    )
    s = settings_from_args(args)
    assert (s.rank, s.alpha, s.shuffle_tags, s.flip, s.sample_prompts, s.network) == (
        4,
        2.0,
        False,
        True,
        ["a", "b"],
        "locon",
    )


def test_options_override_the_settings_file(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"rank": 32, "epochs": 3, "unet_lr": 2e-4}))
    s = settings_from_args(_parse("--settings", str(config), "--epochs", "5"))
    assert (s.rank, s.epochs, s.unet_lr) == (32, 5, 2e-4)


def test_bad_values_exit_with_a_message_naming_the_setting(tmp_path, capsys):
    code = main(
        [
            "train",
            "--base",
            "m",
            "--project",
            "p",
            "--version",
            "v",
            "--dataset",
            str(tmp_path),
            "--outputs",
            str(tmp_path / "o"),
            "--resolution",
            "100",
        ]
    )
    assert code == 2 and "resolution" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--base",
                "m",
                "--project",
                "../x",
                "--version",
                "v",
                "--dataset",
                str(tmp_path),
                "--outputs",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )


def _run_cli(base: Path, tmp_path: Path, *extra: str) -> tuple[int, Path]:
    dataset = write_tiny_dataset(tmp_path / "data", count=2, size=64)
    outputs = tmp_path / "outputs"
    argv = [
        "train",
        "--dataset",
        str(dataset),
        "--base",
        str(base),
        "--project",
        "demo",
        "--version",
        "v1",
        "--outputs",
        str(outputs),
    ]
    argv += [
        "--resolution",
        "64",
        "--batch-size",
        "2",
        "--rank",
        "4",
        "--alpha",
        "2",
        "--mixed-precision",
        "no",
        *extra,
    ]
    return main(argv), outputs / "demo" / "versions" / "v1"


def test_cli_trains_a_saved_model_folder_into_the_store(tmp_path, capsys):
    base = save_tiny_model(tmp_path / "base")
    code, version = _run_cli(base, tmp_path, "--epochs", "2", "--save-every", "1", "--te-lr", "0")
    assert code == 0, capsys.readouterr().err
    files = sorted(p.name for p in (version / "checkpoints").iterdir())
    assert files == ["demo-v1-000001.safetensors", "demo-v1.safetensors"]
    with safe_open(str(version / "checkpoints" / "demo-v1.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert keys and all(k.startswith("lora_unet_") for k in keys)  # te_lr 0: no text-encoder keys
    saved = json.loads((version / "config.json").read_text())
    assert saved["rank"] == 4 and saved["te_lr"] == 0
    assert any((version / "dataset").rglob("*.png"))  # the run trained from the version's snapshot
    assert "demo-v1.safetensors" in capsys.readouterr().out
    # the same version again without --resume is refused, nothing overwritten
    code, _ = _run_cli(base, tmp_path, "--epochs", "1")
    assert code == 2


@pytest.mark.slow
@pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"fixture {FIXTURE} is not present (it lives in ../shared)")
def test_cli_trains_the_shared_tiny_sd1_fixture(tmp_path):
    code, version = _run_cli(FIXTURE, tmp_path, "--max-steps", "2", "--network", "locon")
    assert code == 0
    with safe_open(str(version / "checkpoints" / "demo-v1.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert any(k.startswith("lora_te_") for k in keys) and any("resnets" in k for k in keys)
