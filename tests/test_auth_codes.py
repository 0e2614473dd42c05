"""errors.CODES lists every code the auth sources can produce.

Scans the C++ area and the Python wrappers for code literals, so a new code
cannot ship without its CODES entry and docs/auth.md row; a listed code that
no source mentions any more fails as stale.
"""

from __future__ import annotations

import re
from pathlib import Path

from dclcomms import errors

REPO = Path(__file__).resolve().parents[1]

_PATTERNS = [
    r'fail\(std::move\(r\),\s*"(\w+)"',
    r'set_code\(code,\s*"(\w+)"\)',
    r'Error\(ErrorKind::(?:Auth|Token),\s*"(\w+)"',
    r'token_error\(\s*"(\w+)"',
    r"bad_claims\(",  # helper in register_auth.cpp raising "bad_claims"
    r'r\.code = "(\w+)"',
    r'AuthResult\.failure\(\s*"(\w+)"',
    r"_malformed\(",  # helper raising "signed_fetch_malformed"
    r'code="(\w+)"',
]


def _source_codes() -> tuple[set[str], set[str]]:
    """(auth codes, token codes) found in the sources."""
    files = [
        *sorted((REPO / "cpp" / "auth" / "src").glob("*.cpp")),
        REPO / "cpp" / "bindings" / "register_auth.cpp",
        *sorted((REPO / "python" / "dclcomms" / "auth").glob("*.py")),
    ]
    found: set[str] = set()
    for f in files:
        text = f.read_text(encoding="utf-8")
        for pattern in _PATTERNS:
            for m in re.finditer(pattern, text):
                if m.groups():
                    found.add(m.group(1))
                elif pattern.startswith("bad_claims"):
                    found.add("bad_claims")
                else:
                    found.add("signed_fetch_malformed")
    # recover_address forwards the recovery code of set_code; the chain walk
    # forwards it too (fail(std::move(r), code.c_str(), ...)).
    token = found & errors.CODES[errors.TokenError]
    return found - token - {"invalid_parameter"}, token


def test_every_source_code_is_listed_and_every_listed_code_is_used() -> None:
    auth, token = _source_codes()
    assert auth <= errors.CODES[errors.AuthError], auth - errors.CODES[errors.AuthError]
    assert token <= errors.CODES[errors.TokenError], token - errors.CODES[errors.TokenError]
    # Other areas may raise AuthError/TokenError too: a listed code only has to
    # appear as a literal somewhere in the sources (no stale entries).
    sources = [
        f.read_text(encoding="utf-8")
        for pattern in ("cpp/**/*.cpp", "cpp/**/*.hpp", "python/dclcomms/**/*.py")
        for f in REPO.glob(pattern)
        if f.name != "errors.py"
    ]
    for code in errors.CODES[errors.AuthError] | errors.CODES[errors.TokenError]:
        assert any(f'"{code}"' in text for text in sources), f"stale code {code}"


def test_every_auth_code_is_documented() -> None:
    auth, token = _source_codes()
    doc = (REPO / "docs" / "auth.md").read_text(encoding="utf-8")
    for code in auth | token:
        assert f"`{code}`" in doc, code
