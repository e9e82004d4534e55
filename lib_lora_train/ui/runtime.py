"""The one interface through which the tabs and their HTTP routes reach the program that hosts them.

The tabs were written against the AUTOMATIC1111 WebUI; everything they took from it is a method here: settings and
folders, the GPU queue and the progress/interrupt state, the model (its architecture, a training host around it, a
fingerprint), the LoRA list, the renderer that samples and Epoch Compare use, and the "Send to txt2img" buttons.
``lib_lora_train.webui.runtime`` implements it for the WebUI, ``lib_lora_train.standalone.runtime`` for the
standalone app; each installs itself with ``install`` before the tabs are built.

The base class is a complete host without a model: folders under the working directory, an in-process lock and
progress state, no renderer. Tests build tabs against it (or a subclass) without any host at all.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lib_lora_train.ui.options import OPTIONS

if TYPE_CHECKING:
    from PIL import Image

    from lib_lora_train.compare.plan import CellJob, ComparePlan
    from lib_lora_train.compare.run import RenderedCell
    from lib_lora_train.host import SampleRequest


class NoModelError(ValueError):
    """The host has no model loaded (or cannot lend one); the message says what to do."""


class ProgressState:
    """Progress and interrupt state of the job holding the GPU, with the attribute names of the WebUI's
    ``shared.state`` (``job_count``, ``job_no``, ``textinfo``, ``interrupted``) so that handlers use either.

    ``listener`` (set by a host for the duration of a call) is told after every change, e.g. to move a progress bar.
    """

    def __init__(self) -> None:
        self.job = ""
        self.job_count = 0
        self.job_no = 0
        self.textinfo = ""
        self.interrupted = False
        self.listener: Callable[[ProgressState], None] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        listener = self.__dict__.get("listener")
        if listener is not None and name in ("job_count", "job_no", "textinfo"):
            listener(self)

    def begin(self, job: str = "") -> None:
        self.job, self.job_count, self.job_no, self.textinfo, self.interrupted = job, 0, 0, "", False

    def end(self) -> None:
        self.job = ""

    def interrupt(self) -> None:
        self.interrupted = True


class UIRuntime:
    """What a host gives the tabs. Subclasses override what their host does differently."""

    name = "headless"

    def __init__(self) -> None:
        self.state = ProgressState()
        self._gpu_lock = threading.RLock()

    # --- settings and folders -----------------------------------------------------------------------------------

    def option(self, key: str) -> Any:
        """The current value of one of our options (``ui.options``); its default until the user sets it."""
        return OPTIONS[key].default

    def data_dir(self) -> Path:
        """The host's data folder; projects default to ``<data>/outputs/train_tools``."""
        return Path.cwd()

    def projects_dir(self) -> Path:
        """Where projects live unless the user's option names another folder."""
        return self.data_dir() / "outputs" / "train_tools"

    def models_dir(self) -> Path:
        """The host's models folder."""
        return self.data_dir() / "models"

    def tagger_dir(self) -> Path:
        """Where the tagger's models live unless the user's option names another folder."""
        return self.models_dir() / "tagger"

    def cache_dir(self) -> Path:
        """Where caches (thumbnails) go; no part of it may start with a dot (gradio 3.41 will not serve it)."""
        return Path(tempfile.gettempdir())

    def lora_dir(self) -> Path:
        """The folder the host's LoRA list reads (where trained epochs are published)."""
        return self.models_dir() / "Lora"

    # --- the GPU queue and progress --------------------------------------------------------------------------

    def gpu_lock(self) -> contextlib.AbstractContextManager:
        """Held around every use of the model, so that no generation interleaves with training or a comparison."""
        return self._gpu_lock

    def wrap_gpu_call(self, fn: Callable, extra_outputs: Sequence[Any] | None = None) -> Callable:
        """A gradio handler that runs ``fn`` under the GPU lock with the progress state begun and ended."""

        @functools.wraps(fn)
        def wrapper(*args):
            with self.gpu_lock():
                self.state.begin(getattr(fn, "__name__", ""))
                try:
                    return fn(*args)
                finally:
                    self.state.end()

        return wrapper

    def wrap_queued_call(self, fn: Callable) -> Callable:
        """A gradio handler that runs ``fn`` under the GPU lock (short calls without a progress bar)."""

        @functools.wraps(fn)
        def wrapper(*args):
            with self.gpu_lock():
                return fn(*args)

        return wrapper

    def progress_js(self, target_elem_id: str) -> str | None:
        """JavaScript for a start button's ``_js`` that shows the host's progress bar in ``target_elem_id``; the
        function receives the handler's arguments and must put a task id into the first one. None: no such bar."""
        return None

    def queue_wait_message(self) -> str:
        """What a queued job waits for, in words (shown until its first step)."""
        return "queued: waiting for the model to be free"

    def queue_task(self, task_id: str) -> None:
        """Tell the host's progress bar that ``task_id`` waits for the GPU."""

    # --- the model -------------------------------------------------------------------------------------------

    def model_arch(self) -> str | None:
        """``sd1``, ``sd2`` or ``sdxl`` for the loaded model; None when none is loaded."""
        return None

    def training_unavailable(self) -> str | None:
        """Why this host cannot train at all (a message naming what to use instead), or None when it can."""
        return None

    def make_training_host(self, stop_event: threading.Event, listener: Callable[[Any], None], task_id: str | None):
        """A ``TrainingHost`` around the loaded model for one job; raises NoModelError when there is none."""
        raise NoModelError("this host has no model to train on")

    def host_fingerprint(self, live: bool = False) -> dict:
        """Hashes of the loaded model's parts, to prove a run left it exactly as it was."""
        raise NoModelError("this host has no model to fingerprint")

    # --- the LoRA list and rendering -------------------------------------------------------------------------

    def refresh_lora_list(self) -> None:
        """Re-read the LoRA folder so that newly published epochs are usable by name at once."""

    def available_lora_names(self) -> set[str] | None:
        """File stems of every LoRA the host can apply by ``<lora:NAME:W>``; None when it cannot apply LoRAs."""
        return None

    def render_cell(self, plan: ComparePlan, cell: CellJob) -> RenderedCell | None:
        """One image for an Epoch Compare cell with the host's sampler; None when interrupted."""
        raise NoModelError("this host cannot render images")

    def render_sample(self, request: SampleRequest) -> Image.Image | None:
        """One txt2img image for ``request`` (its prompt may hold ``<lora:NAME:W>``) by the host's sampler, under
        the GPU lock; None when interrupted."""
        raise NoModelError("this host cannot render images")

    def compose_grid(
        self, images: Sequence[Sequence[Image.Image | None]], row_labels: Sequence[str], col_labels: Sequence[str]
    ) -> Image.Image:
        """The labelled grid of a comparison (the WebUI draws its own; elsewhere ``compare.grid``)."""
        from lib_lora_train.compare.grid import compose_grid

        return compose_grid(images, row_labels, col_labels)

    def sampler_choices(self) -> tuple[list[str], list[str]]:
        """(sampler names, scheduler names) the renderer takes."""
        return ["Euler a", "Euler", "DPM++ 2M"], ["Automatic"]

    def xyz_axes(self) -> list[str]:
        """The labels of the host's X/Y/Z plot axes, for the hand-off (the WebUI v1.10.1 list by default)."""
        from lib_lora_train.compare.xyz import TXT2IMG_AXES

        return list(TXT2IMG_AXES)

    # --- a page of our own (hosts without one: ui.page) ---

    def model_choices(self) -> list[str]:
        """Base models the page's picker offers; [] (no picker) where the host has its own."""
        return []

    def current_model(self) -> str | None:
        return None

    def load_model(self, path: str) -> str:
        """Switch the base model; the new model's line for the page, NoModelError saying why not."""
        raise NoModelError("this host chooses its model itself")

    def model_line(self) -> str:
        return ""

    # --- training on another checkpoint (Train Tools' "Base model"); called with the GPU held --------------------

    def checkpoint_choices(self) -> list[str]:
        """The host's checkpoints a version may train on; [] where the host cannot switch under a job (the
        standalone app switches with its page's model picker instead)."""
        return []

    def loaded_checkpoint(self) -> str:
        """The name of the loaded checkpoint, as ``checkpoint_choices`` spells it ("" when none is loaded)."""
        return self.current_model() or ""

    def find_checkpoint(self, name: str) -> str | None:
        """``name`` (a full or short name) as ``checkpoint_choices`` spells it; None when there is no such model."""
        return name if name in self.checkpoint_choices() else None

    def switch_checkpoint(self, name: str) -> str:
        """Load ``name`` with the host's own loader, in place of the loaded model (never beside it); its name."""
        raise NoModelError("this app switches models with the picker at the top of the page; leave base model empty")

    def set_options(self, values: dict[str, Any]) -> None:
        """Save our options (a host with its own Settings page saves them there)."""
        raise NoModelError("this host keeps our options in its own Settings")

    def settings_location(self) -> str:
        return ""

    def served_folders(self) -> list[Path]:
        """Folders whose files the page may show (galleries of samples, grids, candidates)."""
        return [self.data_dir()]

    # --- the page --------------------------------------------------------------------------------------------

    def send_targets(self) -> list[str]:
        """The host's own tabs that generation parameters can be sent to (``txt2img``, ``img2img``)."""
        return []

    def send_buttons(self, tabnames: Sequence[str]) -> dict[str, Any]:
        """Buttons that send generation parameters to the host's own tabs (made inside the current gradio
        layout); {} where the host has no such tabs."""
        return {}

    def bind_send_button(self, button: Any, tabname: str, text_component: Any, image_component: Any = None) -> None:
        """Make a button from ``send_buttons`` paste ``text_component`` (and an image) into ``tabname``."""

    # --- the HTTP routes ------------------------------------------------------------------------------------

    def decode_api_image(self, data: str) -> Image.Image:
        """An image sent to a route as base64, a data:image URL or an http(s) URL, by the rules of the WebUI's own
        decoder (the WebUI's runtime calls that decoder); raises ``tagger.image_input.ImageInputError``."""
        from lib_lora_train.tagger.image_input import decode_image_input

        return decode_image_input(data)

    def other_tagger_apis(self) -> list[str]:
        """Names of other installed extensions that serve the WD14 tagger's routes (``/tagger/v1/...``)."""
        return []


_current: UIRuntime | None = None
_lock = threading.Lock()


def install(runtime: UIRuntime) -> UIRuntime:
    """Make ``runtime`` the one the tabs and routes use (a host calls this before building them)."""
    global _current
    with _lock:
        _current = runtime
    return runtime


def current() -> UIRuntime:
    """The installed runtime; a headless one (no model) when no host installed any."""
    global _current
    with _lock:
        if _current is None:
            _current = UIRuntime()
        return _current


@contextlib.contextmanager
def installed(runtime: UIRuntime) -> Iterator[UIRuntime]:
    """Use ``runtime`` for the duration of a ``with`` block (tests)."""
    global _current
    with _lock:
        before, _current = _current, runtime
    try:
        yield runtime
    finally:
        with _lock:
            _current = before
