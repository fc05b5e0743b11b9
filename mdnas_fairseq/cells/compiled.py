"""``torch.compile`` of a cell's per-time-step function, with a policy and a clean fallback.

Modes:

* ``"off"``: always eager.
* ``"on"``: compile at the first call.
* ``"auto"`` (default): start eager and compile once the eager steps, timed in training
  forward passes, have cost ``compile_after_s`` seconds: the ski-rental rule (switch once the
  rent paid equals the purchase price), which bounds the total time by twice the better of the two
  choices whatever the run's length. A compilation costs tens of seconds per graph on a small CPU,
  so short runs (tests, a demo of a few minutes) never pay for it and long searches do; a forward
  pass is about a third of a training step, so the default of 60 forward seconds is about three
  minutes of eager training time, the measured cost of the two graphs a search compiles (training
  and evaluation; see benchmarks/lm_search_speed.py). ``"auto"`` compiles on CUDA only (``auto_devices``): on a
  CPU, compiling under load took minutes, and a switch that depends on wall-clock time would make
  a CPU run's numbers (compiled and eager steps round differently) depend on the machine's load;
  CPU users who want it pass ``"on"``.

A compilation that fails (no C compiler, an unsupported platform, a backend error) is logged once
and the step runs eagerly from then on. The backward graph is compiled together with the forward
one, so its failures are caught here too and never surface in ``loss.backward()``. As with any
compiled graph, torch refuses a second backward through it (``retain_graph=True``) while
``torch._functorch.config.donated_buffer`` is on (its default); the project never does that.

Pure PyTorch (no fairseq): used by :class:`mdnas_fairseq.cells.rnn.DartsRNNCell`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Iterator, Optional, Sequence

import torch

logger = logging.getLogger(__name__)

COMPILE_MODES = ("auto", "on", "off")


def mark_batch_dynamic(*tensors: Optional[torch.Tensor]) -> None:
    """Let one compiled graph serve every batch size: every dimension but the last (features) is
    marked dynamic ((B, F), or (D, B, F) for a batch grouped by domain)."""
    for t in tensors:
        if t is not None:
            for dim in range(t.dim() - 1):
                torch._dynamo.maybe_mark_dynamic(t, dim)


class CompiledStep:
    """Runs ``fn`` eagerly or compiled according to ``mode``; see the module docstring.

    ``eager_fn``: a function computing the same as ``fn`` with other arguments, run while not
    compiled (the caller passes the arguments :meth:`prepare` says; a compilation that fails inside
    a sequence runs ``fn`` on the compiled call's arguments).

    Per sequence: ``with steps.sequence(timed, device_type) as step:`` gives the callable for its
    time steps (``timed``: whether this sequence's eager time counts towards ``compile_after_s``).
    """

    def __init__(
        self,
        fn: Callable,
        name: str,
        mode: str = "auto",
        compile_after_s: float = 60.0,
        backend: str = "inductor",
        auto_devices: Sequence[str] = ("cuda",),
        eager_fn: Optional[Callable] = None,
    ):
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
        self.fn, self.name, self.mode, self.backend = fn, name, mode, backend
        # what runs while not compiled (default ``fn``); its time counts towards compile_after_s
        self.eager_fn = eager_fn or fn
        self.compile_after_s = compile_after_s
        self.auto_devices = tuple(auto_devices)  # where "auto" may compile at all
        self.eager_seconds = 0.0
        self.compile_seconds: Optional[float] = None  # time of the first compiled call
        self.failed: Optional[str] = None
        self._compiled: Optional[Callable] = None

    @property
    def active(self) -> bool:
        """Whether the compiled function is in use."""
        return self._compiled is not None and self.failed is None

    def prepare(self, device_type: str) -> bool:
        """Start compiling if the policy says so; returns :attr:`active`."""
        if self.failed is None and self._compiled is None:
            auto = self.mode == "auto" and device_type in self.auto_devices
            if self.mode == "on" or (auto and self.eager_seconds >= self.compile_after_s):
                self._start()
        return self.active

    @contextlib.contextmanager
    def sequence(self, timed: bool, device_type: str) -> Iterator[Callable]:
        if self.prepare(device_type):
            # compile the backward graph together with the forward one, so that its failures
            # are caught in _call as well
            with torch._functorch.config.patch(force_non_lazy_backward_lowering=True):
                yield self._call
            return
        start = time.perf_counter()
        yield self.eager_fn
        if timed:
            self.eager_seconds += time.perf_counter() - start

    def _start(self) -> None:
        try:
            self._compiled = torch.compile(self.fn, backend=self.backend)
        except Exception as e:  # torch.compile itself unavailable (e.g. an unsupported Python)
            self._fail(e)
            return
        logger.info(
            "compiling the recurrent cell's %s step (torch.compile, backend %s) after %.1f s of eager steps",
            self.name,
            self.backend,
            self.eager_seconds,
        )

    def _fail(self, error: BaseException) -> None:
        root = error  # a backend failure wraps the compiler's own error
        while getattr(root, "inner_exception", None) is not None or root.__cause__ is not None:
            root = getattr(root, "inner_exception", None) or root.__cause__
        lines = str(root).strip().splitlines()
        self.failed = f"{type(root).__name__}: {lines[0] if lines else ''}"
        self._compiled = None
        logger.warning(
            "torch.compile of the recurrent cell's %s step failed, running it eagerly (%s)",
            self.name,
            self.failed,
        )

    def _call(self, *args):
        if not self.active:  # failed earlier in this sequence
            return self.fn(*args)
        first = self.compile_seconds is None
        start = time.perf_counter() if first else 0.0
        try:
            out = self._compiled(*args)
        except Exception as e:
            self._fail(e)
            return self.fn(*args)
        if first:
            self.compile_seconds = time.perf_counter() - start
            logger.info(
                "compiled the recurrent cell's %s step in %.1f s", self.name, self.compile_seconds
            )
        return out
