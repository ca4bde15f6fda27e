"""``solve()``: one entry point for every reconstruction method, and the method registry behind it.

A method is a :class:`Solver` subclass registered under a name with :func:`register`. Each declares
a pydantic options model (``Options``) whose defaults are documented and whose ranges are validated;
unknown keys are rejected with the list of valid ones. ``solve`` checks the measurement and the
shapes once, converts NumPy input, batches a single measurement, times the run and returns a
:class:`Result`.
"""

from __future__ import annotations

import time
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .._checks import check_finite, to_tensor
from ..operators.base import Operator
from ..priors.base import Prior

Callback = Callable[[int, torch.Tensor, dict[str, float]], Any]


class SolverOptions(BaseModel):
    """Base of every method's options: validated, immutable, unknown keys rejected.

    A bool is refused where a number is expected (``iterations=True`` is an error, not 1).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                field_info = cls.model_fields.get(name)
                if isinstance(value, bool) and field_info is not None and not _accepts_bool(field_info.annotation):
                    raise ValueError(f"{name}: expected {_type_name(field_info.annotation)}, got bool {value!r}")
        return data


class SolverDiverged(RuntimeError):
    """A solver's loss became NaN or Inf."""


class MisfitWarning(UserWarning):
    """An estimate that does not explain its measurement: its data misfit is far above the noise level."""


@dataclass
class Result:
    """What every method returns.

    ``x_hat`` has the batchedness of the ``y`` given to :func:`solve`. Samplers also fill
    ``samples`` (shape ``(B, S, *data_shape)``), ``mean`` and ``std``, with ``x_hat = mean``.
    ``history`` maps names (``loss``, ``data_fit``, ...) to one value per iteration; ``extras``
    holds method-specific outputs (e.g. a trained pre-generator, acceptance rates).
    """

    x_hat: torch.Tensor
    method: str
    options: SolverOptions
    seconds: float = 0.0
    history: dict[str, list[float]] = field(default_factory=dict)
    samples: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


Kind = Literal["map", "posterior", "baseline"]
KINDS: tuple[str, ...] = ("map", "posterior", "baseline")


class Solver(ABC):
    """A reconstruction method. Subclasses set ``name``, ``kind``, ``Options`` and implement :meth:`run`.

    ``kind`` is ``"map"`` (a point estimate using a learned prior), ``"posterior"`` (samples of the
    posterior; ``Result.samples``) or ``"baseline"`` (no learned prior: pseudo-inverse, TV, Deep
    Image Prior). ``needs_prior`` says whether the method uses a prior; ``needs_project`` whether
    it needs ``prior.project``; ``iterative`` whether it calls the callback once per iteration;
    ``references`` the papers it implements (authors, year, title).
    """

    name: ClassVar[str]
    kind: ClassVar[Kind] = "map"
    Options: ClassVar[type[SolverOptions]] = SolverOptions
    needs_prior: ClassVar[bool] = True
    needs_project: ClassVar[bool] = False
    iterative: ClassVar[bool] = True
    description: ClassVar[str] = ""
    references: ClassVar[str] = ""

    def __init__(self, options: SolverOptions) -> None:
        self.options = options

    @abstractmethod
    def run(
        self,
        op: Operator,
        prior: Prior | None,
        y: torch.Tensor,
        *,
        x_init: torch.Tensor | None,
        callback: Callback | None,
        generator: torch.Generator | None,
    ) -> Result:
        """Solve for a batch ``y`` of shape ``(B, *op.out_shape)``; return a batched :class:`Result`."""


METHODS: dict[str, type[Solver]] = {}


def register(cls: type[Solver]) -> type[Solver]:
    """Class decorator adding a solver to the registry under ``cls.name``."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"method {cls.name!r} is already registered by {METHODS[cls.name].__name__}")
    METHODS[cls.name] = cls
    return cls


def list_methods(kind: str | Sequence[str] | None = None) -> list[str]:
    """Names of the registered methods, optionally only those of ``kind`` (one kind or several).

    Example:
        >>> list_methods("posterior")
        ['ambient-vi', 'avi', 'langevin', 'pl-mcmc', 'svi']
    """
    _load_builtin_methods()
    if kind is None:
        return sorted(METHODS)
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"kind: expected one of {', '.join(map(repr, KINDS))}, got {unknown[0]!r}")
    return sorted(name for name, cls in METHODS.items() if cls.kind in kinds)


@dataclass(frozen=True)
class OptionInfo:
    """One option of a method: its name, type, default (None when ``required``), allowed range and description."""

    name: str
    type: str
    default: Any
    range: str
    description: str
    required: bool = False


@dataclass(frozen=True)
class MethodInfo:
    """What :func:`describe_method` returns; ``str()`` gives a readable table."""

    name: str
    kind: str
    description: str
    references: str
    options: tuple[OptionInfo, ...]

    def __str__(self) -> str:
        lines = [f"{self.name} ({self.kind}): {self.description}"]
        if self.references:
            lines.append(f"References: {self.references}")
        lines.append("Options:")
        width = max((len(o.name) for o in self.options), default=0)
        for o in self.options:
            bounds = f", {o.range}" if o.range else ""
            default = "(required)" if o.required else repr(o.default)
            lines.append(f"  {o.name:<{width}}  {o.type} = {default}{bounds}: {o.description}")
        return "\n".join(lines)


def describe_method(method: str) -> MethodInfo:
    """Every option of ``method`` with its type, default, range and description.

    Example:
        >>> info = describe_method("iflow-l")
        >>> info.kind, "lam" in [o.name for o in info.options]
        ('map', True)
    """
    cls = _lookup(method)
    options = tuple(_option_info(name, f) for name, f in cls.Options.model_fields.items())
    return MethodInfo(cls.name, cls.kind, cls.description, cls.references, options)


def _option_info(name: str, field_info: Any) -> OptionInfo:
    bounds = []
    for item in field_info.metadata:
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(item, attr, None)
            if value is not None:
                bounds.append(f"{symbol} {value}")
    required = field_info.is_required()
    return OptionInfo(name, _type_name(field_info.annotation), None if required else field_info.default,
                      " and ".join(bounds), field_info.description or "", required)


def _accepts_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    return any(_accepts_bool(a) for a in typing.get_args(annotation))


def _type_name(annotation: Any) -> str:
    """A readable name of an option's type: ``float``, ``'adam' | 'gd'``, ``float | list[float] | None``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(annotation, "__name__", str(annotation))


def make_options(method: str, **options: Any) -> SolverOptions:
    """Validate ``options`` for ``method``; raise ``ValueError`` naming bad keys and the valid ones."""
    return parse_options(_lookup(method).Options, options, f"method {method!r}")


OptionsT = TypeVar("OptionsT", bound=BaseModel)


def parse_options(model: type[OptionsT], options: dict[str, Any], owner: str) -> OptionsT:
    """``model(**options)``, or ``ValueError("<owner>: invalid options (...). Valid options: ...")`` naming each problem."""
    try:
        return model(**options)
    except ValidationError as err:
        problems = "; ".join(_problem(e) for e in err.errors())
        valid = ", ".join(model.model_fields) or "(none)"
        raise ValueError(f"{owner}: invalid options ({problems}). Valid options: {valid}") from None


def _problem(error: dict[str, Any]) -> str:
    """One pydantic error as ``field: message`` (without pydantic's ``Value error,`` prefix)."""
    message = str(error["msg"]).removeprefix("Value error, ")
    location = ".".join(str(p) for p in error["loc"])
    return f"{location}: {message}" if location else message


def solve(
    op: Operator,
    prior: Prior | None,
    y: torch.Tensor | np.ndarray,
    method: str = "iflow-l",
    *,
    x_init: torch.Tensor | np.ndarray | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
    **options: Any,
) -> Result:
    """Reconstruct ``x`` from ``y = A(x) + noise`` with the named method.

    ``y`` is a tensor or NumPy array of shape ``(B, *op.out_shape)`` or ``op.out_shape`` (a single
    measurement; the result is then unbatched too). ``x_init`` (same batchedness) replaces the
    method's default start. ``callback(iteration, x, info)`` is called by iterative methods.
    ``generator`` seeds every random choice of the method. ``options`` are validated by the method's
    options model (:func:`describe_method` lists them). NumPy input and float64 tensors are cast to
    the prior's dtype and device.

    Raises:
        ValueError: unknown method or option, bad shapes, an empty batch, non-finite values.
        TypeError: a wrong type of ``op``, ``prior``, ``generator``, ``callback``, or complex ``y``.
        SolverDiverged: the method's iterate or objective left the plausible range.

    Example:
        >>> import torch
        >>> from invprob.operators import RandomGaussian
        >>> from invprob.priors import LinearGaussianPrior
        >>> prior = LinearGaussianPrior(torch.randn(16, 2, generator=torch.Generator().manual_seed(0)) / 4, data_shape=(1, 4, 4))
        >>> op = RandomGaussian((1, 4, 4), m=8)
        >>> x = prior.sample(1, generator=torch.Generator().manual_seed(1))
        >>> result = solve(op, prior, op(x), "iflow-l", sigma=1e-3, iterations=100)
        >>> bool(((result.x_hat - x).norm() / x.norm()) < 0.05)
        True
    """
    options_model = make_options(method, **options)
    cls = _lookup(method)
    if not isinstance(op, Operator):
        raise TypeError(f"op: expected an invprob Operator, got {type(op).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__} {generator!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable callback(iteration, x, info) or None, got {type(callback).__name__} {callback!r}")
    if cls.needs_prior:
        check_prior(op, prior, method, cls.needs_project)
    reference = prior if isinstance(prior, Prior) else None
    y_batch, single = _as_batch(y, op.out_shape, "y", reference)
    if y_batch.shape[0] == 0:
        raise ValueError(f"y: expected at least one measurement, got an empty batch of shape {tuple(y_batch.shape)}")
    init = None if x_init is None else _as_batch(x_init, op.in_shape, "x_init", reference)[0]
    if init is not None and init.shape[0] != y_batch.shape[0]:
        raise ValueError(f"x_init: expected {y_batch.shape[0]} start(s), one per measurement in y, got {init.shape[0]}")
    start = time.perf_counter()
    with frozen(prior):
        result = cls(options_model).run(op, prior, y_batch, x_init=init, callback=callback, generator=generator)
    result.seconds = time.perf_counter() - start
    if single:
        _unbatch(result)
    return result


@contextmanager
def frozen(module: object) -> Iterator[None]:
    """Within the block, the weights of ``module`` (if it is a ``torch.nn.Module``) do not require gradients.

    No solver changes the prior's weights (Deep Image Prior with ``network="prior"`` fits a copy),
    so :func:`solve` runs every method inside this block: autograd then records no operation on
    the weights alone (the Gram matrices, log-determinants and pseudo-inverses of the injective
    layers), which a gradient with respect to the image or latent never needs. The flags are
    restored on exit, also after an exception.

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(2, 2)
        >>> with frozen(layer):
        ...     inside = layer.weight.requires_grad
        >>> inside, layer.weight.requires_grad
        (False, True)
    """
    parameters = [p for p in module.parameters() if p.requires_grad] if isinstance(module, torch.nn.Module) else []
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)


def divergence_hint(iteration: int) -> str:
    """What to try when a solver diverges at ``iteration``.

    At iteration 0 the usual cause is a start far outside the data the prior was trained on (a
    flow's inverse can overflow there), so the hint suggests a start inside the data range too.
    """
    if iteration == 0:
        return ("the first step was not finite: start inside the prior's data range "
                "(e.g. x_init=op.pinv(y).clamp(-1, 1)) or try a smaller step size (lr)")
    return "try a smaller step size (lr)"


def check_loss(loss: torch.Tensor, iteration: int, method: str, hint: str | None = None) -> None:
    """Raise :class:`SolverDiverged` if any entry of ``loss`` is NaN or Inf (``hint``: default :func:`divergence_hint`)."""
    if not bool(torch.isfinite(loss).all()):
        raise SolverDiverged(f"{method}: the loss became non-finite at iteration {iteration}; {hint or divergence_hint(iteration)}")


def sigma_per_sample(sigma: float | torch.Tensor | None, y: torch.Tensor, name: str = "sigma") -> torch.Tensor | None:
    """Return the noise level as a ``(B,)`` tensor on ``y``'s device, or None; reject ``sigma <= 0``."""
    if sigma is None:
        return None
    s = torch.as_tensor(sigma, dtype=y.dtype).to(y.device).flatten()
    if s.numel() == 1:
        s = s.expand(y.shape[0])
    if s.numel() != y.shape[0] or not bool((s > 0).all()) or not bool(torch.isfinite(s).all()):
        raise ValueError(f"{name}: expected a positive number or {y.shape[0]} positive numbers, got {sigma!r}")
    return s


def options_model(method: str) -> type[SolverOptions]:
    """The pydantic options model of ``method`` (its fields are the valid options)."""
    return _lookup(method).Options


def _lookup(method: str) -> type[Solver]:
    _load_builtin_methods()
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[method]


def check_prior(op: Operator, prior: Prior | None, method: str, needs_project: bool) -> None:
    """Raise unless ``prior`` is an invprob Prior on the operator's input shape (with ``project`` if needed)."""
    if not isinstance(prior, Prior):
        raise TypeError(f"prior: method {method!r} needs an invprob Prior, got {type(prior).__name__}")
    if tuple(op.in_shape) != tuple(prior.data_shape):
        raise ValueError(
            f"op: the operator's in_shape {op.in_shape} does not match the prior's data_shape {prior.data_shape}"
        )
    if needs_project and not callable(getattr(prior, "project", None)):
        raise TypeError(f"prior: method {method!r} needs prior.project, which {type(prior).__name__} lacks")


def _as_batch(
    value: torch.Tensor | np.ndarray,
    shape: tuple[int, ...],
    name: str,
    prior: Prior | None,
) -> tuple[torch.Tensor, bool]:
    t = to_tensor(value, name)
    if t.is_complex():
        raise TypeError(f"{name}: expected real values, got complex dtype {t.dtype} (pass y.real explicitly if that is meant)")
    if prior is not None:
        t = t.to(device=prior.device, dtype=prior.dtype)
    is_single = tuple(t.shape) == tuple(shape)
    if is_single:
        t = t.unsqueeze(0)
    if tuple(t.shape[1:]) != tuple(shape):
        dims = ", ".join(str(s) for s in shape)
        raise ValueError(f"{name}: expected shape ({dims}) or (B, {dims}), got {tuple(value.shape)}")
    return check_finite(t, name), is_single


def _unbatch(result: Result) -> None:
    for key in ("x_hat", "samples", "mean", "std"):
        value = getattr(result, key)
        if isinstance(value, torch.Tensor):
            setattr(result, key, value[0])


def _load_builtin_methods() -> None:
    """Import the modules that register the built-in methods (on first use, to keep import light)."""
    from . import _builtin  # noqa: F401

