"""Test set-up: one backend per process, chosen by `KERAS_BACKEND`."""

import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()


def pytest_report_header(config):
    return f"keras {keras.version()}, backend {BACKEND}"


def pytest_collection_finish(session):
    """Tests marked `xdist_group` share a per-process fixture (the paper
    toy's end points, the distributed runs): if pytest-xdist stops grouping
    them (pytest 9.2 with pytest-xdist 3.8: nodes no longer take its group
    suffix), each worker computes it again, minutes each, without a word."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    ungrouped = [
        item.nodeid
        for item in session.items
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid
    ]
    if ungrouped:
        raise pytest.UsageError(
            "pytest-xdist did not group the tests marked `xdist_group` "
            f"(e.g. {ungrouped[0]}); use the versions in constraints.txt."
        )


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Every test starts from the same seed and a clean Keras session."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()


# Nothing the library does on its own may warn: a warning raised from
# `joint_keras`, or a Keras `UserWarning` (about a model `joint_keras` built),
# is an error where the tests run the README, the notebooks and the demo.
WARNINGS_AS_ERRORS = (
    "import warnings\n"
    "warnings.filterwarnings('error', module=r'joint_keras(\\..*)?$')\n"
    "warnings.filterwarnings('error', category=UserWarning, module=r'keras(\\..*)?$')\n"
)


@pytest.fixture
def library_warnings_are_errors():
    with warnings.catch_warnings():
        exec(WARNINGS_AS_ERRORS, {})
        yield
