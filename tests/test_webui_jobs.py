"""The background job runner: prepares the version, trains in a thread, reports, stops, publishes, survives errors."""

import threading

import pytest
from webui_fakes import FakeHost, fake_train, make_dataset

from lib_lora_train.settings import TrainSettings
from lib_lora_train.store import ProjectStore
from lib_lora_train.ui.train.jobs import JobBusy, JobRunner, TrainJob


def _runner(tmp_path, train_fn, after_done=None):
    store = ProjectStore(tmp_path / "train_tools")
    return JobRunner(make_host=FakeHost, store_factory=lambda: store, train_fn=train_fn, after_done=after_done), store


def test_a_job_snapshots_the_dataset_saves_settings_and_ends_done(tmp_path):
    published = []
    runner, store = _runner(tmp_path, fake_train(), after_done=lambda v, c: (published.extend(c) or c, ["note"]))
    dataset = make_dataset(tmp_path / "data")
    runner.start(TrainJob("alice", "v1", TrainSettings(rank=4), dataset))
    assert runner.wait(10)
    status = runner.status()
    assert status.state == "done" and status.step == 4 and status.total == 4
    assert [p.rsplit("/", 1)[-1] for p in status.checkpoints] == [
        "alice-v1-000001.safetensors",
        "alice-v1-000002.safetensors",
    ]
    assert status.losses == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)]
    assert len(published) == 2 and "note" in status.log
    version = store.version("alice", "v1")
    assert version.load_settings().rank == 4
    assert sorted(p.name for p in (version.dataset / "5_alice").iterdir())[:2] == ["0.png", "0.txt"]


def test_only_one_job_at_a_time_and_stop_ends_it_stopped(tmp_path):
    gate = threading.Event()
    runner, _ = _runner(tmp_path, fake_train(gate))
    dataset = make_dataset(tmp_path / "data")
    first = runner.start(TrainJob("alice", "v1", TrainSettings(), dataset))
    assert first.state == "running"
    with pytest.raises(JobBusy, match="alice/v1 is training"):
        runner.start(TrainJob("alice", "v2", TrainSettings(), dataset))
    runner.stop()
    gate.set()
    assert runner.wait(10)
    assert runner.status().state == "stopped"
    assert "stop requested" in runner.status().log


def test_an_exception_in_training_ends_in_error_with_the_message(tmp_path):
    runner, _ = _runner(tmp_path, fake_train(fail=True))
    runner.start(TrainJob("alice", "v1", TrainSettings(), make_dataset(tmp_path / "data")))
    assert runner.wait(10)
    status = runner.status()
    assert status.state == "error" and "out of memory" in status.message
    # and the runner takes the next job
    runner.train_fn = fake_train()
    runner.start(TrainJob("alice", "v1", TrainSettings(), None))
    assert runner.wait(10) and runner.status().state == "done"


def test_bad_input_is_refused_before_any_thread_starts(tmp_path):
    runner, _ = _runner(tmp_path, fake_train())
    with pytest.raises(ValueError, match="no dataset yet"):
        runner.start(TrainJob("alice", "v1", TrainSettings(), None))
    with pytest.raises(ValueError, match="project"):
        runner.start(TrainJob("../evil", "v1", TrainSettings(), make_dataset(tmp_path / "data")))
    assert runner.status().state == "idle" and not runner.is_running()


def test_training_runs_inside_the_hosts_exclusive_section(tmp_path):
    hosts = []

    def make_host(*args):
        hosts.append(FakeHost(*args))
        return hosts[-1]

    store = ProjectStore(tmp_path / "s")
    runner = JobRunner(make_host=make_host, store_factory=lambda: store, train_fn=fake_train())
    runner.start(TrainJob("a", "v1", TrainSettings(), make_dataset(tmp_path / "data")))
    assert runner.wait(10)
    assert hosts[0].exclusive_calls == 1


def test_a_queued_job_says_what_it_waits_for_on_which_device(tmp_path):
    from lib_lora_train.hosts.tiny_model import build_tiny_pipeline
    from lib_lora_train.standalone.models import LoadedModel
    from lib_lora_train.standalone.runtime import StandaloneRuntime

    gate = threading.Event()
    runtime = StandaloneRuntime(outputs=tmp_path / "o", models_dir=tmp_path / "m", lora_dir=tmp_path / "l",
                                cache_dir=tmp_path / "c")  # fmt: skip
    runtime.model.loaded = LoadedModel(tmp_path / "tiny", build_tiny_pipeline(0), "sd1")
    store = ProjectStore(tmp_path / "train_tools")
    runner = JobRunner(make_host=FakeHost, store_factory=lambda: store, train_fn=fake_train(gate),
                       waiting=runtime.queue_wait_message)  # fmt: skip
    status = runner.start(TrainJob("alice", "v1", TrainSettings(), make_dataset(tmp_path / "data")))
    assert status.message == "queued: waiting for the app's queue (tagging or a render in progress finishes first); " \
                             "trains on cpu"  # fmt: skip
    assert "GPU" not in status.message
    gate.set()
    assert runner.wait(10)


def test_a_fresh_run_moves_the_previous_runs_files_to_the_trash_and_unpublishes_them(tmp_path):
    store = ProjectStore(tmp_path / "train_tools")
    cleared = []
    runner = JobRunner(make_host=FakeHost, store_factory=lambda: store, train_fn=fake_train(),
                       before_clear=lambda version: cleared.append(version.version))  # fmt: skip
    dataset = make_dataset(tmp_path / "data")
    runner.start(TrainJob("alice", "v1", TrainSettings(), dataset))
    assert runner.wait(10)
    version = store.version("alice", "v1")
    version.partial_file(3).write_bytes(b"partial")  # a stopped run's last steps
    (version.checkpoints / "alice-v1-000007.safetensors").write_bytes(b"an epoch the new run will not reach")
    runner.start(TrainJob("alice", "v1", TrainSettings(), None))
    assert runner.wait(10)
    assert cleared == ["v1"]  # published copies first
    assert sorted(p.name for p in version.checkpoints.iterdir()) == ["alice-v1-000001.safetensors",
                                                                     "alice-v1-000002.safetensors"]  # fmt: skip
    trashed = list((store.root / ".trash" / "alice").iterdir())
    assert len(trashed) == 1 and "alice-v1-000007.safetensors" in {p.name for p in trashed[0].iterdir()}
    assert any("moved to" in line for line in runner.status().log)
    runner.start(TrainJob("alice", "v1", TrainSettings(), None, resume=True))  # a resume keeps them
    assert runner.wait(10) and cleared == ["v1"]


class Checkpoints:
    """A host's checkpoint list and loader, recording what was loaded when (and what training saw)."""

    def __init__(self, loaded="a.safetensors"):
        self.loaded, self.history, self.trained_on = loaded, [], []

    def switch(self, name):
        self.history.append(name)
        self.loaded = name
        return name


def _switching_runner(tmp_path, models, fail=False):
    store = ProjectStore(tmp_path / "train_tools")
    train = fake_train(fail=fail)

    def train_fn(host, settings, paths, **kwargs):
        models.trained_on.append(models.loaded)
        return train(host, settings, paths, **kwargs)

    runner = JobRunner(make_host=FakeHost, store_factory=lambda: store, train_fn=train_fn,
                       loaded_model=lambda: models.loaded, switch_model=models.switch)  # fmt: skip
    return runner


@pytest.mark.parametrize("fail", [False, True])
def test_a_job_trains_on_its_base_model_and_loads_the_previous_one_back(tmp_path, fail):
    models = Checkpoints()
    runner = _switching_runner(tmp_path, models, fail)
    runner.start(TrainJob("alice", "v1", TrainSettings(), make_dataset(tmp_path / "data"), base_model="b.ckpt"))
    assert runner.wait(10)
    assert runner.status().state == ("error" if fail else "done")
    assert models.trained_on == ["b.ckpt"] and models.history == ["b.ckpt", "a.safetensors"]
    assert models.loaded == "a.safetensors"  # back on every exit path
    assert any("loading a.safetensors back" in line for line in runner.status().log)


def test_a_job_can_leave_its_base_model_loaded_and_the_loaded_one_is_not_reloaded(tmp_path):
    models = Checkpoints()
    runner = _switching_runner(tmp_path, models)
    dataset = make_dataset(tmp_path / "data")
    runner.start(TrainJob("alice", "v1", TrainSettings(), dataset, base_model="b.ckpt", restore_model=False))
    assert runner.wait(10)
    assert models.history == ["b.ckpt"] and models.loaded == "b.ckpt"
    runner.start(TrainJob("alice", "v2", TrainSettings(), dataset, base_model="b.ckpt"))
    assert runner.wait(10)
    assert models.history == ["b.ckpt"]  # already loaded: no switch, nothing to load back


def test_a_finished_job_renders_its_epoch_compare_grid_when_asked(tmp_path):
    store = ProjectStore(tmp_path / "train_tools")
    asked = []

    def compare(job, paths):
        asked.append((job.version, paths.version))
        return [paths.path / "compare" / "grid.png"], ["scored 2 epochs"]

    runner = JobRunner(make_host=FakeHost, store_factory=lambda: store, train_fn=fake_train(), compare=compare)
    dataset = make_dataset(tmp_path / "data")
    runner.start(TrainJob("alice", "v1", TrainSettings(), dataset))
    assert runner.wait(10) and asked == [] and runner.status().grids == []
    runner.start(TrainJob("alice", "v2", TrainSettings(), dataset, compare_after=True))
    assert runner.wait(10)
    status = runner.status()
    assert asked == [("v2", "v2")] and status.state == "done"
    assert status.grids[0].endswith("grid.png") and "scored 2 epochs" in status.log


def test_a_failing_compare_after_training_is_a_note_not_a_failed_job(tmp_path):
    store = ProjectStore(tmp_path / "train_tools")

    def compare(job, paths):
        raise RuntimeError("sampler exploded")

    runner = JobRunner(make_host=FakeHost, store_factory=lambda: store, train_fn=fake_train(), compare=compare)
    runner.start(TrainJob("alice", "v1", TrainSettings(), make_dataset(tmp_path / "data"), compare_after=True))
    assert runner.wait(10)
    status = runner.status()
    assert status.state == "done" and any("sampler exploded" in line for line in status.log)


def test_the_after_run_grid_takes_its_settings_from_the_version(tmp_path):
    from lib_lora_train.ui.services import compare_request_for

    settings = TrainSettings(sample_prompts=["alice, smile --n lowres"], sample_steps=12, resolution=768, seed=9)
    request = compare_request_for(TrainJob("p", "v", settings), None)
    assert (request.prompts, request.negative_prompt) == (["alice, smile"], "lowres")
    assert (request.steps, request.width, request.height, request.seeds) == (12, 768, 768, "9")
