# Developer conveniences. The README's two commands (scripts/run, scripts/test)
# are what users and CI run; these targets are for working on the code.
PYTHON ?= python3
CPP_SOURCES := $(shell git ls-files 'cpp/*.cpp' 'cpp/*.hpp' 'bench/*.cpp' 2>/dev/null)

.PHONY: lint format test test-fast dev fuzz

lint:
	clang-format --dry-run --Werror $(CPP_SOURCES)
	$(PYTHON) -m ruff check python tests bench
	$(PYTHON) -m ruff format --check python tests bench
	$(PYTHON) -m mypy

format:
	clang-format -i $(CPP_SOURCES)
	$(PYTHON) -m ruff format python tests bench
	$(PYTHON) -m ruff check --fix python tests bench

# Incremental developer build into build/dev (with the GoogleTest suite).
dev:
	$(PYTHON) -m pip install -q --no-build-isolation --no-deps -C build-dir=build/dev \
	  -C cmake.define.DCLCOMMS_TESTS=ON -C cmake.define.DCLCOMMS_WERROR=ON .

test:
	scripts/test

# The fuzz/sanitizer stage with every libFuzzer target for 5 minutes (scripts/test
# runs scripts/fuzz ci: a fixed number of executions each); FUZZ_SECONDS and
# FUZZ_TARGETS narrow it.
fuzz:
	scripts/fuzz long

# The edit loop: everything but the tests marked slow (bench smoke runs, bots, notebooks).
test-fast:
	scripts/test -m "not slow"
