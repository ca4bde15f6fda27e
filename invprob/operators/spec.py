"""The operator-spec language: ``"gauss:250,randmask:0.15,sr:4,block:12,ct:30"``.

A spec is a comma-separated list of ``kind[:parameter]`` items; the parameter is optional and
defaults as listed in :data:`OPERATOR_KINDS`:

==============  ======================================================================
``gauss:M``     :class:`RandomGaussian`, ``M`` measurements (default 250)
``randmask:P``  :class:`RandomMask`, each pixel dropped with probability ``P`` (default 0.15)
``drop:P``      the same operator as ``randmask:P`` (the unambiguous name)
``keep:P``      :class:`RandomMask`, each pixel kept with probability ``P`` (default 0.15)
``sr:F``        :class:`SuperResolution` by the factor ``F`` (default 4)
``block:S``     :class:`BlockMask`, a centred ``S x S`` square unobserved (default 12)
``bottom``      :class:`HalfMask`, the bottom half unobserved (no parameter)
``ct:N``        :class:`LimitedAngleCT`, ``N`` angles in [30°, 150°] (default 30)
==============  ======================================================================

:func:`parse_operators` reads a list (``invprob bench --operators``), :func:`parse_operator`
exactly one (``invprob solve --operator``) and :func:`count_operators` says how many a spec holds.
Seeded kinds (``gauss``, ``randmask``, ``drop``, ``keep``) draw from the seed given to
:meth:`OperatorSpec.build`.

References: K. Kothari, A. Khorashadizadeh, M. de Hoop, I. Dokmanić (2021), "Trumpets: Injective
Flows for Inference and Inverse Problems" (the four MNIST problems of its Table 3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .base import LinearOperator
from .ct import LimitedAngleCT, default_angles
from .masks import BlockMask, HalfMask, RandomMask
from .matrix import RandomGaussian
from .superres import SuperResolution

Number = int | float


@dataclass(frozen=True)
class OperatorKind:
    """One kind of the spec language: its parameter's type, range and default, and a builder.

    Example:
        >>> kind = OPERATOR_KINDS["keep"]
        >>> kind.usage, kind.default, kind.valid(0.15), kind.valid(0.0)
        ('keep:P', 0.15, True, False)
    """

    name: str
    param: str | None
    cast: type | None
    default: Number | None
    valid: Callable[[Number], bool]
    expected: str
    builder: Callable[[tuple[int, ...], Number | None, int], LinearOperator]
    help: str

    @property
    def usage(self) -> str:
        """How the kind is written, e.g. ``gauss:M``."""
        return self.name if self.param is None else f"{self.name}:{self.param}"


def _ct(shape: tuple[int, ...], n_angles: Number | None, seed: int) -> LinearOperator:
    return LimitedAngleCT(shape, angles=default_angles(int(n_angles)))


def _probability(low_open: bool) -> Callable[[Number], bool]:
    return (lambda p: 0.0 < p <= 1.0) if low_open else (lambda p: 0.0 <= p < 1.0)


def _positive(v: Number) -> bool:
    return v >= 1


OPERATOR_KINDS: dict[str, OperatorKind] = {
    k.name: k
    for k in (
        OperatorKind("gauss", "M", int, 250, _positive, "an int M >= 1", lambda s, v, seed: RandomGaussian(s, v, seed=seed),
                     "random Gaussian, M measurements (default 250)"),
        OperatorKind("randmask", "P", float, 0.15, _probability(False), "a drop probability P in [0, 1)",
                     lambda s, v, seed: RandomMask(s, v, seed=seed), "random pixel mask, each pixel dropped with probability P (default 0.15)"),
        OperatorKind("drop", "P", float, 0.15, _probability(False), "a drop probability P in [0, 1)",
                     lambda s, v, seed: RandomMask(s, v, seed=seed), "the same as randmask:P: each pixel dropped with probability P"),
        OperatorKind("keep", "P", float, 0.15, _probability(True), "a keep probability P in (0, 1]",
                     lambda s, v, seed: RandomMask(s, keep=v, seed=seed), "random pixel mask, each pixel kept with probability P (default 0.15)"),
        OperatorKind("sr", "F", int, 4, _positive, "an int factor F >= 1", lambda s, v, seed: SuperResolution(s, v),
                     "super-resolution, block averaging by the factor F (default 4)"),
        OperatorKind("block", "S", int, 12, _positive, "an int side S >= 1", lambda s, v, seed: BlockMask(s, v),
                     "centred S x S square unobserved (default 12)"),
        OperatorKind("bottom", None, None, None, lambda v: True, "no parameter", lambda s, v, seed: HalfMask(s, "bottom"),
                     "bottom half of the image unobserved"),
        OperatorKind("ct", "N", int, 30, _positive, "an int N >= 1 of angles", _ct,
                     "limited-angle CT, N angles in [30°, 150°] (default 30)"),
    )
}
"""Every kind of the spec language by name."""

ALIASES = {"drop": "randmask"}
"""Kinds that build the same operator as another kind."""


def describe_operators() -> str:
    """One line per kind: its usage and meaning (for ``--help`` texts and error messages).

    Example:
        >>> print(describe_operators().splitlines()[0])
        gauss:M  random Gaussian, M measurements (default 250)
    """
    return "\n".join(f"{k.usage}  {k.help}" for k in OPERATOR_KINDS.values())


def _valid_kinds() -> str:
    return ", ".join(k.usage for k in OPERATOR_KINDS.values())


@dataclass(frozen=True)
class OperatorSpec:
    """A parsed operator spec such as ``gauss:250``: ``kind``, its parameter (``None`` when
    omitted: the kind's default) and the ``text`` it was read from.

    Example:
        >>> spec = parse_operator("drop")
        >>> spec.kind, spec.value, spec.parameter, spec.canonical
        ('drop', None, 0.15, 'randmask:0.15')
    """

    kind: str
    value: Number | None
    text: str

    @property
    def parameter(self) -> Number | None:
        """The parameter in effect: the given value or the kind's default."""
        return OPERATOR_KINDS[self.kind].default if self.value is None else self.value

    @property
    def canonical(self) -> str:
        """``kind:parameter`` with aliases resolved and the default filled in (two specs with the
        same canonical form build the same operator)."""
        kind = ALIASES.get(self.kind, self.kind)
        return kind if self.parameter is None else f"{kind}:{self.parameter:g}"

    def build(self, shape: tuple[int, ...], seed: int = 0) -> LinearOperator:
        """Instantiate the operator for images of ``shape`` (seeded kinds draw from ``seed``).

        Example:
            >>> parse_operator("keep:0.5").build((1, 8, 8), seed=0)
            RandomMask(in_shape=(1, 8, 8), keep=0.5, seed=0)
        """
        return OPERATOR_KINDS[self.kind].builder(tuple(shape), self.parameter, seed)


def _parse_item(item: str, spec: str) -> OperatorSpec:
    kind_name, sep, raw = item.partition(":")
    kind_name, raw = kind_name.strip(), raw.strip()
    if kind_name not in OPERATOR_KINDS:
        raise ValueError(f"operators: unknown operator {kind_name!r} in {spec!r}; valid: {_valid_kinds()}")
    kind = OPERATOR_KINDS[kind_name]
    if kind.cast is None:
        if sep:
            raise ValueError(f"operators: {item!r} in {spec!r}: {kind_name} takes no parameter (write {kind.usage!r})")
        return OperatorSpec(kind_name, None, item)
    if not raw:
        if sep:
            raise ValueError(f"operators: {item!r} in {spec!r}: expected {kind.usage} with {kind.expected}, got nothing after ':'")
        return OperatorSpec(kind_name, None, item)
    try:
        value = kind.cast(raw)
    except ValueError:
        raise ValueError(
            f"operators: {item!r} in {spec!r} needs a {kind.cast.__name__} after ':' ({kind.usage} with {kind.expected}), got {raw!r}"
        ) from None
    if not kind.valid(value):
        raise ValueError(f"operators: {item!r} in {spec!r}: expected {kind.usage} with {kind.expected}, got {raw}")
    return OperatorSpec(kind_name, value, item)


def _items(spec: object) -> list[str]:
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"operators: expected a comma-separated spec such as 'gauss:250,sr:4', got {spec!r}; valid kinds: {_valid_kinds()}"
        )
    items = [part.strip() for part in spec.split(",")]
    if "" in items:
        raise ValueError(f"operators: {spec!r} has an empty item (two commas or a trailing comma)")
    return items


def count_operators(spec: str) -> int:
    """How many operators the spec lists (its comma-separated items), without building any.

    Example:
        >>> count_operators("gauss:250, sr:4"), count_operators("ct")
        (2, 1)
    """
    return len(_items(spec))


def parse_operators(spec: str) -> list[OperatorSpec]:
    """Parse ``"gauss:250,randmask:0.15,sr:4,block:12,ct:30"``; the parameter after ``:`` is optional.

    Errors name the offending item and list the valid kinds; an operator listed twice (also as
    ``sr`` and ``sr:4``, or ``randmask:0.15`` and ``drop:0.15``) is refused.

    Example:
        >>> [(s.kind, s.value) for s in parse_operators("gauss:250,keep:0.15,bottom")]
        [('gauss', 250), ('keep', 0.15), ('bottom', None)]
        >>> parse_operators("gauss:250,blur:3")
        Traceback (most recent call last):
        ...
        ValueError: operators: unknown operator 'blur' in 'gauss:250,blur:3'; valid: gauss:M, randmask:P, drop:P, keep:P, sr:F, block:S, bottom, ct:N
    """
    out = [_parse_item(item, spec) for item in _items(spec)]
    seen: dict[str, str] = {}
    for o in out:
        if o.canonical in seen:
            raise ValueError(f"operators: {spec!r} lists an operator twice ({seen[o.canonical]!r} and {o.text!r})")
        seen[o.canonical] = o.text
    return out


def parse_operator(spec: str, name: str = "operator") -> OperatorSpec:
    """Parse a spec that must hold exactly one operator (``name`` is the argument the error names).

    Example:
        >>> parse_operator("sr").parameter
        4
        >>> parse_operator("gauss:250,sr:4", name="--operator")
        Traceback (most recent call last):
        ...
        ValueError: --operator: expected one operator spec, got 2 in 'gauss:250,sr:4'; give one of: gauss:M, randmask:P, drop:P, keep:P, sr:F, block:S, bottom, ct:N
    """
    n = count_operators(spec)
    if n != 1:
        raise ValueError(f"{name}: expected one operator spec, got {n} in {spec!r}; give one of: {_valid_kinds()}")
    return parse_operators(spec)[0]
