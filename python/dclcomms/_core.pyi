# Type stubs for the private compiled module dclcomms._core.
# tests/test_stubs.py checks these against the built module: every public name
# and every parameter name must match.

__version__: str

# --- codec -------------------------------------------------------------------

# --- auth --------------------------------------------------------------------

# --- archipelago -------------------------------------------------------------

# --- ws ----------------------------------------------------------------------
