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
