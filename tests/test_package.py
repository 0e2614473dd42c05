"""Package-level checks: version, typing marker, error family, vendored vectors."""

from __future__ import annotations

import importlib.metadata
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import dclcomms
from dclcomms import _core, errors
from tests.helpers.common import CONFORMANCE

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "conformance"


def test_version_is_single_sourced() -> None:
    assert dclcomms.__version__ == _core.__version__
    assert dclcomms.__version__ == importlib.metadata.version("dclcomms")


def test_py_typed_is_installed() -> None:
    assert (Path(dclcomms.__file__).parent / "py.typed").exists()


@pytest.mark.parametrize("cls", sorted(errors.CODES, key=lambda c: c.__name__))
def test_error_classes_carry_codes_and_pickle(cls: type[errors.Error]) -> None:
    exc = cls("boom", code="some_code")
    assert isinstance(exc, errors.Error)
    assert exc.code == "some_code"
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is cls and again.code == "some_code" and str(again) == "boom"


def test_error_hierarchy() -> None:
    assert issubclass(errors.DecodeError, ValueError)
    assert issubclass(errors.UnknownTypeError, KeyError)
    assert str(errors.UnknownTypeError("no such type", code="unknown_type")) == "no such type"


def test_cli_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dclcomms", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == dclcomms.__version__


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/conformance is not beside this checkout")
def test_vendored_vectors_match_shared() -> None:
    shared = sorted(SHARED.glob("*.json"))
    vendored = sorted(CONFORMANCE.glob("*.json"))
    assert shared, f"no vectors in {SHARED}"
    assert [f.name for f in vendored] == [f.name for f in shared]  # none missing, none extra
    for f in shared:
        assert (CONFORMANCE / f.name).read_bytes() == f.read_bytes(), f.name
