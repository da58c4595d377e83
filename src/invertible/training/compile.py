"""``torch.compile`` for flows, falling back to eager execution when compiling fails."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from invertible.core import Flow, validation

__all__ = ["CompiledFlow", "CompiledModule", "compile_flow", "compile_with_fallback"]


def _is_compile_error(error: BaseException) -> bool:
    """Whether ``error`` comes from the compiler stack (dynamo, inductor, the C++ toolchain)
    rather than from the model or its input.
    """
    module = type(error).__module__ or ""
    if module.startswith(("torch._dynamo", "torch._inductor", "torch._functorch")):
        return True
    return isinstance(error, (OSError, ImportError)) or "compil" in str(error).lower()


def compile_with_fallback(fn: Callable[..., Any], what: str, **options: Any) -> Callable[..., Any]:
    """``torch.compile(fn, **options)`` that falls back to ``fn`` (warning once) when the
    compiler is unavailable or fails, e.g. without a working C++ toolchain on CPU.
    """
    try:
        compiled = torch.compile(fn, **options)
    except Exception as e:  # any failure to set up compilation
        warnings.warn(f"torch.compile of {what} unavailable ({e}); running eagerly", stacklevel=3)
        return fn
    state = {"compiled": True}

    def call(*args: Any, **kwargs: Any) -> Any:
        if state["compiled"]:
            try:
                return compiled(*args, **kwargs)
            except Exception as e:
                if not _is_compile_error(e):
                    raise
                state["compiled"] = False
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                warnings.warn(
                    f"torch.compile of {what} failed ({type(e).__name__}: {first}); "
                    "falling back to eager execution",
                    stacklevel=2,
                )
        return fn(*args, **kwargs)

    call.eager = fn  # type: ignore[attr-defined]
    call.is_compiled = lambda: state["compiled"]  # type: ignore[attr-defined]
    return call


class CompiledModule(nn.Module):
    """``module`` (a flow or its DDP wrapper) whose calls run through ``torch.compile``.

    Input validation is switched off inside (the trainer validated the data once), so the
    graph has no data-dependent breaks. Used by the trainer with ``compile=True``.
    """

    def __init__(self, module: nn.Module, **options: Any) -> None:
        super().__init__()
        self.module = module
        self._fn = compile_with_fallback(
            self.module.__call__, f"{type(module).__name__} (training)", **options
        )

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the compiled module with input checks off."""
        with validation(False):
            return self._fn(*args, **kwargs)


class CompiledFlow(nn.Module):
    """A view of ``flow`` whose density and sampling passes are compiled (see
    :func:`compile_flow`); the flow itself is untouched and shares the weights.

    ``log_prob`` validates its input once, then runs the compiled x → z pass;
    ``sample`` draws the base noise eagerly (the same random numbers as ``flow.sample``)
    and runs the compiled z → x pass, ``chunk_size`` rows at a time if given.
    """

    def __init__(self, flow: Flow, **options: Any) -> None:
        super().__init__()
        self.flow = flow
        name = type(flow).__name__
        self._density = compile_with_fallback(self._density_eager, f"{name}.log_prob", **options)
        self._generate = compile_with_fallback(self._generate_eager, f"{name}.sample", **options)

    @property
    def event_shape(self) -> tuple[int, ...]:
        """The flow's event shape."""
        return self.flow.event_shape

    def _density_eager(self, x: Tensor, context: Tensor | None) -> Tensor:
        # The flow's own log_prob: mask ensembles average over their masks, empty batches
        # short-circuit, exactly as in eager mode.
        return self.flow.log_prob(x, context)

    def _generate_eager(self, z: Tensor, context: Tensor | None) -> Tensor:
        return self.flow.transform(z, context)[0]

    def _ensemble(self) -> bool:
        return int(getattr(self.flow, "num_masks", 1)) > 1 and not self.flow.training

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Same as ``flow.log_prob``, compiled."""
        self.flow.check_input(x)
        context = self.flow.check_context(context, x.shape[0])
        with validation(False):
            return self._density(x, context)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x, context)

    @torch.no_grad()
    def log_prob_chunked(
        self, x: Tensor, context: Tensor | None = None, *, chunk_size: int = 4096
    ) -> Tensor:
        """``log_prob`` without gradients, ``chunk_size`` rows at a time (bounded memory)."""
        self.flow.check_input(x)
        context = self.flow.check_context(context, x.shape[0])
        with validation(False):
            out = [
                self._density(
                    x[i : i + chunk_size], None if context is None else context[i : i + chunk_size]
                )
                for i in range(0, x.shape[0], chunk_size)
            ]
        return torch.cat(out) if out else x.new_zeros(0)

    @torch.no_grad()
    def sample(
        self, n: int, context: Tensor | None = None, *, chunk_size: int | None = None
    ) -> Tensor:
        """Same as ``flow.sample`` (same random numbers), compiled z → x pass.

        A mask ensemble in eval mode samples its mixture through the flow itself (each
        row's mask is drawn first), so it is not compiled.
        """
        if self._ensemble():
            return self.flow.sample(n, context, chunk_size=chunk_size)

        def draw(m: int, rows: Tensor | None) -> Tensor:
            z = self.flow.base.rsample(m, rows)
            return self._generate(z, rows) if m else z

        return self.flow.in_chunks(draw, n, context, chunk_size)


def compile_flow(flow: Flow, **options: Any) -> CompiledFlow:
    """Compile ``flow``'s ``log_prob`` and ``sample`` with ``torch.compile(**options)``.

    Returns a :class:`CompiledFlow` sharing the flow's weights. If compilation is not
    available (e.g. no C++ compiler for the CPU backend) or fails, it warns once and runs
    eagerly, giving the same numbers. The first call of each pass compiles (slow); later
    calls with new shapes may recompile once with dynamic shapes.

    Example:
        >>> import torch, invertible
        >>> flow = invertible.RealNVP(2, num_layers=2, hidden_features=(8,)).eval()
        >>> fast = compile_flow(flow, backend="eager")
        >>> x = torch.randn(5, 2)
        >>> torch.allclose(fast.log_prob(x), flow.log_prob(x))
        True
    """
    return CompiledFlow(flow, **options)
