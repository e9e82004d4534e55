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


# --- what a new user trips over (#13) ------------------------------------------------------------------------------


def _argv(tmp_path: Path, base, *extra: str, dataset=None, version="v1") -> list[str]:
    data = dataset if dataset is not None else write_tiny_dataset(tmp_path / "data", count=2, size=64)
    return ["train", "--dataset", str(data), "--base", str(base), "--project", "demo", "--version", version,
            "--outputs", str(tmp_path / "outputs"), "--resolution", "64", "--batch-size", "2", "--rank", "4",
            "--mixed-precision", "no", "--max-steps", "1", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("base") / "tiny")


def _nothing_created(tmp_path: Path) -> bool:
    return not (tmp_path / "outputs").exists()


def test_a_cuda_device_on_a_cpu_build_is_refused_before_anything_is_created(tmp_path, tiny_base, capsys):
    import torch

    if torch.backends.cuda.is_built():
        pytest.skip("this torch has CUDA: the CPU-build message cannot be shown here")
    assert main(_argv(tmp_path, tiny_base, "--device", "cuda")) == 2
    assert "CPU build without CUDA; use --device cpu" in capsys.readouterr().err
    assert _nothing_created(tmp_path)


@pytest.mark.parametrize(
    "tensors, message",
    [(None, "not a readable .safetensors file"),
     ({"lora_unet_down_blocks_0_x.lora_down.weight": [1.0]}, "this is a LoRA (kohya/LyCORIS format), not a base model")],
    ids=["garbage", "lora"],
)  # fmt: skip
def test_a_base_that_is_not_a_model_is_named_before_anything_is_created(tmp_path, capsys, tensors, message):
    import torch
    from safetensors.torch import save_file

    base = tmp_path / "model.safetensors"
    if tensors is None:
        base.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    else:
        save_file({k: torch.tensor(v) for k, v in tensors.items()}, str(base))
    assert main(_argv(tmp_path, base)) == 2
    assert message in capsys.readouterr().err
    assert _nothing_created(tmp_path)


def test_a_missing_dataset_or_package_creates_nothing_and_a_failed_run_can_be_retried(tmp_path, tiny_base, capsys, monkeypatch):
    import sys

    assert main(_argv(tmp_path, tiny_base, dataset=tmp_path / "nope")) == 2
    assert "the dataset folder does not exist" in capsys.readouterr().err and _nothing_created(tmp_path)
    monkeypatch.setitem(sys.modules, "lion_pytorch", None)  # the optimiser's package is missing: refused at once
    assert main(_argv(tmp_path, tiny_base, "--optimizer", "lion")) == 2
    out = capsys.readouterr()
    assert (out.out + out.err).count("needs the package 'lion-pytorch'") == 1  # said once, not twice
    assert _nothing_created(tmp_path)  # refused before a version folder was made
    assert main(_argv(tmp_path, tiny_base)) == 0  # the same --version again: the failed run is reused
    assert main(_argv(tmp_path, tiny_base)) == 2  # now it holds a trained run: refused, saying what to do
    err = capsys.readouterr().err
    assert "continue it with --resume" in err and "python -m lib_lora_train versions delete demo v1" in err


def test_resume_without_saved_state_names_the_flag_and_exits_2(tmp_path, tiny_base, capsys):
    assert main(_argv(tmp_path, tiny_base)) == 0
    capsys.readouterr()
    assert main(_argv(tmp_path, tiny_base, "--resume")) == 2
    assert "train with --save-state to be able to resume" in capsys.readouterr().err


def test_versions_are_listed_and_deleted_to_the_trash(tmp_path, tiny_base, capsys):
    assert main(_argv(tmp_path, tiny_base, "--save-state")) == 0
    capsys.readouterr()
    outputs = ["--outputs", str(tmp_path / "outputs")]
    assert main(["versions", *outputs]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("demo/v1\t") and "1 LoRA file(s)" in line and "state at step 1" in line
    assert main(["versions", "delete", "demo", "v1", *outputs]) == 0
    assert "moved to the trash" in capsys.readouterr().out
    assert main(["versions", *outputs]) == 0 and capsys.readouterr().out.strip() == "demo: no versions"
    assert main(["versions", "delete", "demo", "v1", *outputs]) == 2


def test_the_progress_bar_shows_the_step_it_draws(monkeypatch):
    import tqdm as tqdm_module

    from lib_lora_train.cli import _ProgressPrinter
    from lib_lora_train.train.events import ProgressEvent

    calls = []

    class Bar:
        def __init__(self, **kwargs):
            self.n = kwargs.get("initial", 0)

        def set_postfix(self, post, refresh=False):
            calls.append(("postfix", post["epoch"]))

        def update(self, n):
            self.n += n
            calls.append(("draw", self.n))

        def close(self):
            pass

    monkeypatch.setattr(tqdm_module, "tqdm", Bar)
    printer = _ProgressPrinter()
    for step, epoch in ((1, 1), (2, 2)):
        printer(ProgressEvent("step", step, 2, epoch, 2, 0.5, loss_avg=0.5, lr=1e-4))
    assert calls == [("postfix", "1/2"), ("draw", 1), ("postfix", "2/2"), ("draw", 2)]


def test_help_describes_every_option_and_shows_defaults_readably(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "[[]]" not in text and "[]" not in text
    assert "needed for a new version, not with --resume" in text
    for name in ("keep-tokens", "bucket-step", "comment", "output-name"):
        block = text.split(f"--{name}", 1)[1].split("\n  --", 1)[0]
        assert len(block.split()) > 4, f"--{name} only repeats its name: {block!r}"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--rank", "512"), "rank: 512 is larger than the layer lora_unet."),
        (("--reg-data-dir", "/nowhere/reg"), "reg_data_dir: /nowhere/reg: the folder does not exist"),
        (("--masked-loss", "--mask-dir", "/nowhere/masks"), "mask_dir: /nowhere/masks: the folder does not exist"),
        (("--network-weights", "/nowhere/x.safetensors"), "no such LoRA file"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_a_version_exists(tmp_path, tiny_base, capsys, extra, message):
    assert main(_argv(tmp_path, tiny_base, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1
    assert not (tmp_path / "outputs" / "demo").exists()
