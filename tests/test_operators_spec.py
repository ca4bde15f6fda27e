"""The operator-spec language: every kind, defaults, errors, one-operator parsing."""

import pytest
import torch

from invprob.cli import main
from invprob.operators import (
    BlockMask,
    HalfMask,
    LimitedAngleCT,
    RandomGaussian,
    RandomMask,
    SuperResolution,
    count_operators,
    parse_operator,
    parse_operators,
)
from invprob.operators.spec import OPERATOR_KINDS, describe_operators

SHAPE = (1, 32, 32)


@pytest.mark.parametrize(
    "text, cls, check",
    [
        ("gauss:250", RandomGaussian, lambda op: op.m == 250),
        ("gauss", RandomGaussian, lambda op: op.m == 250),
        ("randmask:0.15", RandomMask, lambda op: op.p == 0.15 and abs(op.kept_fraction - 0.85) < 0.03),
        ("drop:0.15", RandomMask, lambda op: op.p == 0.15 and abs(op.kept_fraction - 0.85) < 0.03),
        ("keep:0.15", RandomMask, lambda op: op.keep == 0.15 and abs(op.kept_fraction - 0.15) < 0.03),
        ("sr:4", SuperResolution, lambda op: op.factor == 4 and op.out_shape == (1, 8, 8)),
        ("block:12", BlockMask, lambda op: op.size == 12 and op.kept_fraction == 1 - 144 / 1024),
        ("block:16", BlockMask, lambda op: op.mask[0, 8:24, 8:24].sum() == 0 and op.mask.sum() == 1024 - 256),
        ("bottom", HalfMask, lambda op: op.mask[0, :16].all() and op.mask[0, 16:].sum() == 0),
        ("ct", LimitedAngleCT, lambda op: len(op.angles) == 30),
        ("ct:12", LimitedAngleCT, lambda op: len(op.angles) == 12 and op.angles[0] == 30 and op.angles[-1] == 150),
    ],
)
def test_every_kind_builds_the_documented_operator(text, cls, check):
    op = parse_operator(text).build(SHAPE, seed=0)
    assert type(op) is cls
    assert check(op)


def test_drop_and_randmask_are_the_same_operator_and_keep_is_its_opposite_convention():
    drop, randmask, keep = (parse_operator(t).build(SHAPE, seed=3) for t in ("drop:0.3", "randmask:0.3", "keep:0.3"))
    assert torch.equal(drop.mask, randmask.mask)
    assert drop.kept_fraction > 0.6 > 0.4 > keep.kept_fraction


def test_seed_changes_random_kinds():
    a, b = (parse_operator("keep:0.5").build(SHAPE, seed=s) for s in (0, 1))
    assert not torch.equal(a.mask, b.mask)


def test_parse_list_keeps_text_and_value():
    specs = parse_operators(" gauss:250 , keep:0.15,bottom,ct ")
    assert [(s.kind, s.value, s.text) for s in specs] == [
        ("gauss", 250, "gauss:250"), ("keep", 0.15, "keep:0.15"), ("bottom", None, "bottom"), ("ct", None, "ct")]
    assert [s.parameter for s in specs] == [250, 0.15, None, 30]


@pytest.mark.parametrize(
    "spec, words",
    [
        ("gauss:10,blur:3", ["unknown operator 'blur'", "valid:", "gauss:M", "keep:P", "bottom", "ct:N"]),
        ("gauss:ten", ["'gauss:ten'", "needs a int", "gauss:M"]),
        ("gauss:2.5", ["'gauss:2.5'", "needs a int"]),
        ("gauss:0", ["'gauss:0'", "M >= 1"]),
        ("randmask:1.0", ["'randmask:1.0'", "drop probability P in [0, 1)"]),
        ("keep:0", ["'keep:0'", "keep probability P in (0, 1]"]),
        ("keep:nan", ["'keep:nan'", "keep probability"]),
        ("bottom:3", ["'bottom:3'", "takes no parameter"]),
        ("sr:", ["'sr:'", "nothing after ':'"]),
        ("sr:4,sr:4", ["twice"]),
        ("sr,sr:4", ["twice", "'sr'", "'sr:4'"]),
        ("randmask:0.15,drop:0.15", ["twice"]),
        ("gauss:250,,sr:4", ["empty item"]),
        ("", ["comma-separated", "valid kinds"]),
        (None, ["comma-separated"]),
    ],
)
def test_errors_name_the_bad_item(spec, words):
    with pytest.raises(ValueError) as info:
        parse_operators(spec)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_count_and_exactly_one():
    assert count_operators("gauss:250,sr:4") == 2
    assert count_operators("ct") == 1
    with pytest.raises(ValueError, match=r"--operator: expected one operator spec, got 2 in 'gauss:250,sr:4'; give one of: gauss:M"):
        parse_operator("gauss:250,sr:4", name="--operator")


def test_solve_cli_refuses_two_operators_before_any_work(capsys, tmp_path):
    code = main(["solve", "--image", str(tmp_path / "missing.png"), "--operator", "gauss:250,sr:4", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "--operator: expected one operator spec, got 2" in err


def test_describe_lists_every_kind():
    text = describe_operators()
    assert all(kind.usage in text for kind in OPERATOR_KINDS.values())
