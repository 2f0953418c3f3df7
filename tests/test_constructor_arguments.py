"""Every numeric constructor argument of every `jk.weighting` strategy and
built-in `jk.losses` term is checked as Keras checks its layers' arguments:
`TypeError` for a value of the wrong type, `ValueError` for NaN, infinity or
a value out of range, each naming the class and the argument and ending
with `Received: argument=value`."""

import inspect
import math
import numbers

import numpy as np
import pytest

import joint_keras as jk
from joint_keras.joint_loss import JointLoss
from joint_keras.weighting import Weighting

NAN, INF = math.nan, math.inf
MAX_SEED = 2**31 - 1

STRATEGIES = [
    cls
    for cls in vars(jk.weighting).values()
    if inspect.isclass(cls) and issubclass(cls, Weighting) and cls is not Weighting
]
LOSSES = [
    cls
    for cls in vars(jk.losses).values()
    if inspect.isclass(cls)
    and issubclass(cls, JointLoss)
    and cls.__module__ == jk.losses.__name__
]
OWNERS = {
    **{cls: f"jk.weighting.{cls.__name__}" for cls in STRATEGIES},
    **{cls: f"jk.losses.{cls.__name__}" for cls in LOSSES},
}

# The arguments without a default.
REQUIRED = {
    jk.losses.MutualKL: {"models": ["a", "b"]},
    jk.losses.Distillation: {"teacher": "t", "student": "s"},
    jk.losses.Consistency: {"models": ["a", "b"]},
    jk.losses.InfoNCE: {"query": "q", "candidate": "c"},
    jk.losses.GradientPenalty: {"critic": "c", "fake": "f"},
}

WRONG_TYPES = ["0.5", True, None, [0.5]]

# Each rule: (valid values other than the default, values that raise
# `ValueError`, values that raise `TypeError`).
RULES = {
    "finite": ([-3.0, 2, np.float32(0.5)], [NAN, INF, -INF], WRONG_TYPES),
    "non-negative": (
        [0.0, 0, 2.5, np.float64(1e-4)],
        [-1e-3, -1, NAN, INF, -INF],
        WRONG_TYPES,
    ),
    "positive": ([1e-3, 3, np.float32(2.5)], [0.0, 0, -1.0, NAN, INF], WRONG_TYPES),
    "[0, 1]": ([0.0, 1.0, 1, 0.25], [-0.1, 1.1, NAN, INF], WRONG_TYPES),
    "[0, 1)": ([0.0, 0, 0.99], [-0.1, 1.0, 1, NAN, INF], WRONG_TYPES),
    "seed": (
        [0, 7, MAX_SEED, np.int64(5)],
        [-1, MAX_SEED + 1],
        [1.0, NAN, "1", True],
    ),
    "bool": ([True, False], [], [1, 0, 1.0, "yes", None]),
}

ARGUMENTS = {
    (jk.weighting.CAGrad, "c"): "non-negative",
    (jk.weighting.DBMTL, "beta"): "[0, 1)",
    (jk.weighting.DBMTL, "beta_sigma"): "non-negative",
    (jk.weighting.DWA, "temperature"): "positive",
    (jk.weighting.FAMO, "gamma"): "non-negative",
    (jk.weighting.FAMO, "learning_rate"): "positive",
    (jk.weighting.FairGrad, "alpha"): "positive",
    (jk.weighting.GradDrop, "leak"): "[0, 1]",
    (jk.weighting.GradDrop, "seed"): "seed",
    (jk.weighting.GradNorm, "alpha"): "non-negative",
    (jk.weighting.GradNorm, "learning_rate"): "positive",
    (jk.weighting.GradVac, "beta"): "[0, 1]",
    (jk.weighting.GradVac, "seed"): "seed",
    (jk.weighting.MGDA, "norm_eps"): "non-negative",
    (jk.weighting.MGDA, "reg_eps"): "non-negative",
    (jk.weighting.PCGrad, "seed"): "seed",
    (jk.weighting.PCGrad, "shared_order"): "bool",
    (jk.weighting.RLW, "seed"): "seed",
    (jk.weighting.UPGrad, "norm_eps"): "non-negative",
    (jk.weighting.UPGrad, "reg_eps"): "non-negative",
    (jk.weighting.Uncertainty, "initial_log_variance"): "finite",
    (jk.losses.MutualKL, "temperature"): "positive",
    (jk.losses.MutualKL, "from_logits"): "bool",
    (jk.losses.MutualKL, "weight"): "non-negative",
    (jk.losses.Distillation, "temperature"): "positive",
    (jk.losses.Distillation, "from_logits"): "bool",
    (jk.losses.Distillation, "weight"): "non-negative",
    (jk.losses.Consistency, "weight"): "non-negative",
    (jk.losses.InfoNCE, "temperature"): "positive",
    (jk.losses.InfoNCE, "normalize"): "bool",
    (jk.losses.InfoNCE, "weight"): "non-negative",
    (jk.losses.GradientPenalty, "seed"): "seed",
    (jk.losses.GradientPenalty, "weight"): "non-negative",
}


def make(cls, **arguments):
    return cls(**REQUIRED.get(cls, {}), **arguments)


TABLE = [
    pytest.param(cls, argument, id=f"{cls.__name__}-{argument}")
    for cls, argument in ARGUMENTS
]


def numeric_arguments(cls):
    """The constructor arguments whose default is a number (bools included)
    or that are seeds."""
    return {
        name
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if isinstance(parameter.default, numbers.Number) or name == "seed"
    }


def test_every_strategy_and_loss_is_covered():
    assert len(STRATEGIES) == 19
    assert {cls.__name__ for cls in STRATEGIES} == set(jk.weighting.__all__) - {
        "Coefficients",
        "Weighting",
        "get",
    }
    assert len(LOSSES) == 5


@pytest.mark.parametrize("cls", STRATEGIES + LOSSES, ids=lambda cls: cls.__name__)
def test_every_numeric_argument_has_a_rule(cls):
    listed = {argument for owner, argument in ARGUMENTS if owner is cls}
    assert listed == numeric_arguments(cls)


@pytest.mark.parametrize("cls", STRATEGIES + LOSSES, ids=lambda cls: cls.__name__)
def test_defaults_construct(cls):
    make(cls)
    defaults = {
        name: inspect.signature(cls.__init__).parameters[name].default
        for name in numeric_arguments(cls)
    }
    for name, default in defaults.items():
        assert getattr(make(cls, **{name: default}), name) == default


@pytest.mark.parametrize("cls, argument", TABLE)
def test_valid_values_are_accepted(cls, argument):
    rule = ARGUMENTS[cls, argument]
    for value in RULES[rule][0]:
        made = make(cls, **{argument: value})
        stored = getattr(made, argument)
        assert stored == value
        if rule == "bool":
            assert stored is value
        elif rule == "seed":
            assert type(stored) is int
        elif argument != "weight":  # `JointLoss` keeps its weight as given.
            assert type(stored) is float
        restored = type(made).from_config(made.get_config())
        assert getattr(restored, argument) == stored


@pytest.mark.parametrize(
    "error, column", [(ValueError, 1), (TypeError, 2)], ids=["range", "type"]
)
@pytest.mark.parametrize("cls, argument", TABLE)
def test_bad_values_raise(cls, argument, error, column):
    # Out of range: a `ValueError`; not a number of the kind: a `TypeError`.
    for value in RULES[ARGUMENTS[cls, argument]][column]:
        with pytest.raises(error) as info:
            make(cls, **{argument: value})
        check_message(str(info.value), cls, argument, value)
        if error is TypeError:
            assert str(info.value).endswith(f" of type {type(value).__name__}")


def check_message(message, cls, argument, value):
    assert f"`{OWNERS[cls]}`" in message
    assert f"`{argument}` must be " in message
    assert f"Received: {argument}={value!r}" in message


def test_messages_say_what_was_expected():
    with pytest.raises(ValueError) as info:
        jk.weighting.GradNorm(learning_rate=-1.0)
    assert str(info.value) == (
        "`jk.weighting.GradNorm`: `learning_rate` must be positive and finite "
        "(a float). Received: learning_rate=-1.0"
    )
    with pytest.raises(ValueError) as info:
        jk.weighting.DBMTL(beta=1.0)
    assert "`beta` must be in [0, 1) (a float). Received: beta=1.0" in str(info.value)
    with pytest.raises(TypeError) as info:
        jk.weighting.RLW(seed="1")
    assert str(info.value) == (
        "`jk.weighting.RLW`: `seed` must be in [0, 2147483647] (None or an "
        "int). Received: seed='1' of type str"
    )
