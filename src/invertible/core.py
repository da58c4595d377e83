"""The two contracts every model is built from: :class:`Transform` and :class:`Flow`.

Direction convention (see ``MODELS.md``), used everywhere in this library:

* ``forward`` is the **generative** direction, z → x. :meth:`Flow.sample` runs it.
* ``inverse`` is the **normalizing** direction, x → z. :meth:`Flow.log_prob` runs it.

Each direction returns ``(output, log_abs_det)`` where ``log_abs_det`` is the log-absolute
determinant of the Jacobian *of the direction that ran*, one number per sample (shape
``[batch]``). Hence ``inverse(x)[1] == -forward(inverse(x)[0])[1]``.

Inputs are validated once, at the entry points of :class:`Flow` (shapes, dtypes, context,
non-finite values), by :func:`check_input`; transforms themselves stay lean.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "Compose",
    "Distribution",
    "Flow",
    "Inverse",
    "Transform",
    "check_finite_rows",
    "check_input",
    "validation",
]

_VALIDATE = True


class validation:  # lower case: used like a function, ``with validation(False): ...``
    """Switch input validation of :class:`Flow` on or off (on by default).

    Validation checks shapes, dtypes and finiteness of inputs; the finiteness check reads
    the whole batch, which on a GPU forces a synchronisation. Turn it off in tight loops
    once the data pipeline is known to be clean.

    Example:
        >>> import invertible
        >>> with invertible.validation(False):
        ...     pass
        >>> invertible.validation.enabled()
        True
    """

    def __init__(self, enabled: bool) -> None:
        global _VALIDATE
        self._previous = _VALIDATE
        _VALIDATE = enabled

    def __enter__(self) -> validation:
        return self

    def __exit__(self, *args: object) -> None:
        global _VALIDATE
        _VALIDATE = self._previous

    @staticmethod
    def enabled() -> bool:
        """Whether input validation is on."""
        return _VALIDATE


def _shape_str(shape: Iterable[int | str]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _graph_capture() -> bool:
    """Whether a graph is being captured (``jit.trace``, ``torch.compile``, ``torch.export``),
    where reading the data to check it would bake a data-dependent branch into the graph.
    """
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def check_input(
    name: str,
    value: Tensor,
    event_shape: Sequence[int],
    *,
    what: str = "input",
    check_finite: bool = True,
) -> None:
    """Validate a batch ``value`` of events of shape ``event_shape``.

    Raises ``TypeError``/``ValueError`` with a message that names the argument, the expected
    and the received shape, and how to fix it. Used by :class:`Flow` for data and context.

    Example:
        >>> import torch
        >>> check_input("x", torch.zeros(4, 3), (2,))
        Traceback (most recent call last):
        ...
        ValueError: x: expected shape [batch, 2], got [4, 3] ...
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    expected = ("batch", *event_shape)
    if value.dim() != len(expected) or tuple(value.shape[1:]) != tuple(event_shape):
        hint = ""
        if value.dim() == len(event_shape) and tuple(value.shape) == tuple(event_shape):
            hint = f"; a single {what} needs a batch dimension: use {name}.unsqueeze(0)"
        elif value.dim() == 1 and len(event_shape) == 1:
            hint = f"; a batch of scalars needs a feature dimension: use {name}.unsqueeze(-1)"
        raise ValueError(
            f"{name}: expected shape {_shape_str(expected)}, got {_shape_str(value.shape)} "
            f"(the model was built for {what}s of shape {_shape_str(event_shape)}){hint}"
        )
    if not value.is_floating_point():
        raise TypeError(
            f"{name}: expected a floating-point tensor, got {value.dtype}; "
            f"convert with {name}.float()"
        )
    if check_finite:
        check_finite_rows(name, value)


def check_finite_rows(name: str, value: Tensor) -> None:
    """Raise a ``ValueError`` naming the rows of ``value`` that hold NaN or inf.

    Skipped when validation is off, while a graph is captured, and under
    ``torch.func.vmap`` (where the values cannot be read).

    Example:
        >>> check_finite_rows("x", torch.tensor([[0.0], [float("nan")]]))
        Traceback (most recent call last):
        ...
        ValueError: x: 1 of 2 rows contain NaN or inf (rows 1); ...
    """
    if _VALIDATE and value.numel() > 0 and not _graph_capture():
        finite = torch.isfinite(value.flatten(1)).all(dim=1)
        try:
            all_finite = bool(finite.all())
        except RuntimeError as error:  # under torch.func.vmap the values are not readable
            if "vmap" not in str(error):
                raise
            return
        if not all_finite:
            bad = (~finite).nonzero().flatten()
            rows = ", ".join(str(int(i)) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise ValueError(
                f"{name}: {len(bad)} of {value.shape[0]} rows contain NaN or inf "
                f"(rows {rows}); remove or impute them before calling the flow"
            )


class Transform(nn.Module):
    """An invertible map between a latent z and a data point x.

    Subclasses implement both directions, each returning the output and the
    log-absolute-determinant of the Jacobian of *that* direction, of shape ``[batch]``:

    * ``forward(z, context=None) -> (x, log|det ∂x/∂z|)``: generative direction;
    * ``inverse(x, context=None) -> (z, log|det ∂z/∂x|)``: normalizing direction.

    Each subclass's docstring says which direction is one parallel pass and which is
    sequential. ``context`` carries conditioning features (``[batch, context_features]``);
    transforms that are not conditional ignore it.

    Example:
        >>> import torch, invertible
        >>> t = invertible.Rescaling(3)
        >>> x, ladj = t(torch.randn(5, 3))
        >>> ladj.shape
        torch.Size([5])
        >>> z, ladj_inv = t.inverse(x)
        >>> torch.allclose(ladj_inv, -ladj)
        True
    """

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction z → x: returns ``(x, log|det ∂x/∂z|)`` (cost: see the class)."""
        raise NotImplementedError

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → z: returns ``(z, log|det ∂z/∂x|)`` (cost: see the class)."""
        raise NotImplementedError

    def inverted(self) -> Transform:
        """This transform with its two directions swapped."""
        return Inverse(self)


class Inverse(Transform):
    """The inverse of a transform: ``forward`` runs ``transform.inverse`` and vice versa.

    Its parallel and sequential directions are those of the wrapped transform, swapped.

    Args:
        transform: the transform to invert.

    Example:
        >>> import torch, invertible
        >>> t = invertible.Rescaling(2)
        >>> _ = torch.nn.init.constant_(t.log_scale, 1.0)
        >>> x, ladj = invertible.Inverse(t)(torch.ones(1, 2))
        >>> ladj
        tensor([-2.0000], grad_fn=<...>)
    """

    def __init__(self, transform: Transform) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction z → x: returns ``(x, log|det ∂x/∂z|)`` (cost: see the class)."""
        return self.transform.inverse(z, context)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → z: returns ``(z, log|det ∂z/∂x|)`` (cost: see the class)."""
        return self.transform.forward(x, context)

    def inverted(self) -> Transform:
        """The same map with its directions swapped."""
        return self.transform


class Compose(Transform):
    """A chain of transforms, listed in the generative order (the first one receives z).

    ``forward`` applies ``t_1, ..., t_K`` to z; ``inverse`` applies their inverses in the
    reverse order to x. Log-determinants add up. Each direction is parallel if every member
    is parallel in that direction.

    Args:
        transforms: the transforms, first applied to z first.

    Example:
        >>> import torch, invertible
        >>> t = invertible.Compose([invertible.Rescaling(2), invertible.Reverse(2)])
        >>> x, ladj = t(torch.randn(4, 2))
        >>> z, ladj_inv = t.inverse(x)
        >>> torch.allclose(ladj, -ladj_inv)
        True
    """

    def __init__(self, transforms: Iterable[Transform]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction z → x: returns ``(x, log|det ∂x/∂z|)`` (cost: see the class)."""
        total = z.new_zeros(z.shape[0])
        for transform in self.transforms:
            z, ladj = transform(z, context)
            total = total + ladj
        return z, total

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → z: returns ``(z, log|det ∂z/∂x|)`` (cost: see the class)."""
        total = x.new_zeros(x.shape[0])
        for transform in reversed(self.transforms):
            x, ladj = transform.inverse(x, context)
            total = total + ladj
        return x, total

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, index: int) -> Transform:
        return self.transforms[index]  # type: ignore[return-value]


@runtime_checkable
class Distribution(Protocol):
    """What :class:`Flow` needs of a base distribution (an ``nn.Module``).

    ``log_prob(z, context) -> [batch]``; ``rsample(n, context) -> [n, *event_shape]``
    (reparameterised: gradients reach the distribution's parameters); ``event_shape``.
    """

    event_shape: tuple[int, ...]

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of each row of ``z`` (shape ``[batch]``)."""
        ...

    def rsample(self, n: int, context: Tensor | None = None) -> Tensor:
        """``n`` reparameterised draws of shape ``[n, *event_shape]``."""
        ...


def _jsonable(value: Any) -> Any:
    """A constructor argument as JSON: tuples and tensors become lists."""
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def _recording_config(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a preset's ``__init__`` so that it records its arguments in ``self.config``.

    The outermost constructor finishes last, so the most derived class's arguments win;
    defaults are filled in, so a checkpoint rebuilds the flow even if defaults change.
    """
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: Flow, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop(next(iter(signature.parameters)))  # self
        for name, parameter in signature.parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(arguments.pop(name))
            elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                arguments.pop(name)
        self.config = {name: _jsonable(value) for name, value in arguments.items()}

    return wrapper


class Flow(nn.Module):
    r"""A normalizing flow: a base density p_Z and an invertible map f: z → x.

    .. math:: \log p_X(x) = \log p_Z(f^{-1}(x)) + \log |\det \partial f^{-1}/\partial x|

    ``log_prob`` runs the transform's ``inverse`` (x → z); ``sample`` runs its ``forward``
    (z → x). Which of them is one parallel pass depends on the transform (see its docstring).
    Moving the flow with ``.to(device)`` or ``.to(dtype)`` moves everything: base
    distributions keep their constants in buffers.

    Presets (:class:`~invertible.NICE`, :class:`~invertible.RealNVP`, ``MAF``, ``IAF``, ...)
    are subclasses that record their constructor arguments in ``self.config`` so that a
    checkpoint can rebuild them from JSON.

    Args:
        transform: the map z → x.
        base: the base distribution of z.
        context_features: number of conditioning features (0 for an unconditional flow).

    Example:
        >>> import torch, invertible
        >>> flow = invertible.Flow(invertible.Rescaling(2), invertible.StandardNormal(2))
        >>> flow.log_prob(torch.zeros(3, 2))
        tensor([-1.8379, -1.8379, -1.8379], grad_fn=<AddBackward0>)
        >>> flow.sample(4).shape
        torch.Size([4, 2])
    """

    registry: ClassVar[dict[str, type[Flow]]] = {}
    config: dict[str, Any]

    def __init_subclass__(cls, preset: bool = True, **kwargs: Any) -> None:
        """Register a preset by name and make it record its constructor arguments.

        ``class Base(Flow, preset=False)`` declares a building block for presets (built
        from modules, not from JSON): it is neither registered nor recorded.
        """
        super().__init_subclass__(**kwargs)
        if not preset or cls.__name__.startswith("_"):
            return
        Flow.registry[cls.__name__] = cls
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_config(cls.__init__)  # type: ignore[method-assign]

    def __init__(self, transform: Transform, base: nn.Module, *, context_features: int = 0) -> None:
        super().__init__()
        self.transform = transform
        self.base = base
        self.context_features = context_features
        self.config = {}

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one event (one data point), without the batch dimension."""
        return tuple(self.base.event_shape)

    @property
    def features(self) -> int:
        """Number of scalar dimensions of one event (D)."""
        return math.prod(self.event_shape)

    # -- validation ------------------------------------------------------------------------
    def check_context(self, context: Tensor | None, batch: int | None) -> Tensor | None:
        """Validate a context for ``batch`` rows; a single context row is broadcast."""
        if self.context_features == 0:
            if context is not None:
                raise ValueError(
                    "context: this flow is unconditional (context_features=0) but a context "
                    "was given; build the flow with context_features=C to condition it"
                )
            return None
        if context is None:
            raise ValueError(
                f"context: this flow is conditional and needs a context of shape "
                f"[batch, {self.context_features}]"
            )
        if context.dim() == 1 and batch is not None:
            context = context.unsqueeze(0)
        if batch is not None and context.dim() == 2 and context.shape[0] == 1 and batch != 1:
            context = context.expand(batch, -1)
        check_input("context", context, (self.context_features,), what="context")
        self.check_dtype("context", context)
        if batch is not None and context.shape[0] != batch:
            raise ValueError(
                f"context: expected {batch} rows (one per sample), got {context.shape[0]}"
            )
        return context

    def check_n(self, n: int) -> int:
        """Validate a number of samples; returns it as a Python ``int``.

        Any integral number is accepted (``numpy.int64``, a 0-d integer tensor), since
        counts often come from array arithmetic.
        """
        if isinstance(n, Tensor) and n.dim() == 0 and not n.is_floating_point():
            n = int(n)
        if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n: expected a non-negative int number of samples, got {n!r}")
        return int(n)

    def check_input(self, x: Tensor) -> None:
        """Validate a batch of data points: shape, dtype, finiteness (one clear error)."""
        check_input("x", x, self.event_shape, what="data point")
        self.check_dtype("x", x)

    def check_dtype(self, name: str, value: Tensor) -> None:
        """Refuse a tensor whose dtype differs from the flow's, naming both and the fix."""
        dtype = self._dtype()
        if dtype is not None and value.dtype != dtype:
            raise TypeError(
                f"{name}: dtype {value.dtype} does not match the flow's {dtype}; "
                f"use {name}.to({dtype}) or flow.to({value.dtype})"
            )

    def _dtype(self) -> torch.dtype | None:
        for tensor in self.parameters():
            return tensor.dtype
        for tensor in self.buffers():
            if tensor.is_floating_point():
                return tensor.dtype
        return None

    # -- the public API --------------------------------------------------------------------
    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of each row of ``x`` (shape ``[batch]``), via the inverse x → z."""
        self.check_input(x)
        context = self.check_context(context, x.shape[0])
        if x.shape[0] == 0:  # valid input; no layer may see it (batch statistics of nothing)
            return x.new_zeros(0)
        z, ladj = self.transform.inverse(x, context)
        return self.base.log_prob(z, context) + ladj

    def rsample(self, n: int, context: Tensor | None = None) -> Tensor:
        """``n`` reparameterised samples (gradients flow to the parameters), via z → x."""
        n = self.check_n(n)
        context = self.check_context(context, n)
        z = self.base.rsample(n, context)
        if n == 0:
            return z
        return self.transform(z, context)[0]

    @torch.no_grad()
    def sample(
        self, n: int, context: Tensor | None = None, *, chunk_size: int | None = None
    ) -> Tensor:
        """``n`` samples of shape ``[n, *event_shape]``, without gradients.

        With ``chunk_size``, samples are drawn ``chunk_size`` at a time, so peak memory stays
        bounded however large ``n`` is (only the output grows).
        """
        return self.in_chunks(self.rsample, n, context, chunk_size)

    def in_chunks(
        self,
        draw: Callable[[int, Tensor | None], Tensor],
        n: int,
        context: Tensor | None,
        chunk_size: int | None,
    ) -> Tensor:
        """Call ``draw(m, context_rows)`` on chunks of at most ``chunk_size`` of ``n`` rows.

        Validates ``n``, the context and ``chunk_size`` once and concatenates the chunks;
        ``chunk_size=None`` draws all ``n`` at once. Used by every ``sample`` method.
        """
        n = self.check_n(n)
        context = self.check_context(context, n)
        if chunk_size is not None and (
            not isinstance(chunk_size, numbers.Integral)
            or isinstance(chunk_size, bool)
            or chunk_size < 1
        ):
            raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
        if chunk_size is None or n <= chunk_size:
            return draw(n, context)
        chunks = []
        for start in range(0, n, int(chunk_size)):
            stop = min(start + int(chunk_size), n)
            chunks.append(draw(stop - start, None if context is None else context[start:stop]))
        return torch.cat(chunks)

    @torch.no_grad()
    def log_prob_chunked(
        self, x: Tensor, context: Tensor | None = None, *, chunk_size: int = 4096
    ) -> Tensor:
        """:meth:`log_prob` without gradients, ``chunk_size`` rows at a time (bounded memory).

        Example:
            >>> import torch, invertible
            >>> flow = invertible.RealNVP(2, num_layers=2, hidden_features=(8,)).eval()
            >>> flow.log_prob_chunked(torch.zeros(10, 2), chunk_size=3).shape
            torch.Size([10])
        """
        self.check_input(x)
        context = self.check_context(context, x.shape[0])
        with validation(False):  # checked once above, not once per chunk
            return (
                torch.cat(
                    [
                        self.log_prob(
                            x[start : start + chunk_size],
                            None if context is None else context[start : start + chunk_size],
                        )
                        for start in range(0, x.shape[0], chunk_size)
                    ]
                )
                if x.shape[0]
                else x.new_zeros(0)
            )

    def sample_and_log_prob(self, n: int, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``n`` reparameterised samples and their log-density, from one z → x pass.

        ``log p(x) = log p_Z(z) - log|det ∂x/∂z|``: no inversion is needed, so for flows
        whose forward is parallel (IAF, couplings) this costs one pass.
        """
        n = self.check_n(n)
        context = self.check_context(context, n)
        z = self.base.rsample(n, context)
        if n == 0:
            return z, z.new_zeros(0)
        log_pz = self.base.log_prob(z, context)
        x, ladj = self.transform(z, context)
        return x, log_pz - ladj

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Same as :meth:`log_prob`, so that ``nn.Module`` hooks and DDP wrap the density."""
        return self.log_prob(x, context)
