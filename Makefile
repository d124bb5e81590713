# One command each on a fresh machine with only python3 + pip: the venv is built when absent.
# The Python versions that requires-python in pyproject.toml admits, newest first (tests/test_install.py checks
# that the two agree). PY=/path/to/python3.X picks one; otherwise the newest python3.X on PATH, then python3.
SUPPORTED := 3.14 3.13 3.12 3.11
PY      ?=
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache
export XLA_PYTHON_CLIENT_PREALLOCATE ?= false

# The first candidate that runs and is a supported version (nothing when none is). Evaluated only when used.
FIND_PY = for p in $(or $(PY),$(addprefix python,$(SUPPORTED)) python3); do \
	v=$$($$p -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue; \
	case " $(SUPPORTED) " in *" $$v "*) echo $$p; exit 0;; esac; done
FOUND_PY = $(shell $(FIND_PY))
NO_PY = headstart needs Python $(lastword $(SUPPORTED)) to $(firstword $(SUPPORTED)) and $(if $(PY),PY=$(PY) is not \
	one (not found or another version),found none (tried $(addprefix python,$(SUPPORTED)) python3)): install one or \
	name it with PY=/path/to/python3.X
ifneq ($(PY),)
ifeq ($(FOUND_PY),)
$(error $(NO_PY))
endif
endif

.PHONY: demo test bench bench-pyg bench-gpu cuda12 clean metamath

# An existing .venv is reused, whichever Python built it (`make clean` to change); otherwise it is made with the
# Python found above. Then the tested set, exactly (requirements.lock, the whole set: installed without resolving,
# so that playground's unused warp-lang and mediapy stay out), and the project on top without resolving.
$(STAMP): requirements.lock pyproject.toml
	$(if $(wildcard $(BIN)/python),,$(if $(FOUND_PY),,$(error $(NO_PY))))
	@if [ -x $(BIN)/python ]; then echo "updating $(VENV) ($$($(BIN)/python --version))"; \
	else echo "building $(VENV) with $(FOUND_PY) ($$($(FOUND_PY) --version))" && $(FOUND_PY) -m venv $(VENV); fi
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python experiments/wsrl.py --demo

# The suite includes tests/test_install.py: .venv matches the lock, and every locked release has a wheel for
# every supported Python (tools/check_wheels.py; needs the network).
# --dist loadfile: a module's tests share one worker, so each module-scoped fixture (a compiled program, a trained
# population) is built once. (--dist loadgroup with xdist_group marks silently stopped grouping on pytest 9.2:
# pytest-dev/pytest-xdist#1386; measured here, a fixture was built on both workers.)
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=15

# The peers of benchmarks/sac.py (rejax, gymnax) live in their own venv, built when absent.
PEERS   := benchmarks/.venv-peers
$(PEERS)/.installed: benchmarks/requirements-peers.txt
	$(if $(wildcard $(PEERS)/bin/python),,$(if $(FOUND_PY),,$(error $(NO_PY))))
	@[ -x $(PEERS)/bin/python ] || $(FOUND_PY) -m venv $(PEERS)
	echo '*' > $(PEERS)/.gitignore
	$(PEERS)/bin/pip install --quiet --upgrade pip
	$(PEERS)/bin/pip install --quiet -r benchmarks/requirements-peers.txt
	touch $@

bench: $(STAMP) $(PEERS)/.installed
	$(BIN)/python benchmarks/envs.py
	$(BIN)/python benchmarks/sac.py --json runs/bench_sac.json

# The GPU path: JAX's CUDA 12 plugin at the version of the jax pin (pyproject's `cuda12` extra), into .venv. Only
# that requirement is resolved (the plugin needs its NVIDIA wheels): `pip install -e '.[cuda12]'` would resolve the
# whole project again and pull in playground's warp-lang and mediapy, which the --no-deps lock install leaves out.
JAX_PIN = $(shell sed -n 's/^jax==//p' requirements.lock)
cuda12: $(STAMP)
	$(BIN)/pip install --quiet 'jax[cuda12]==$(JAX_PIN)'

# On a GPU, <= 8 minutes: SAC/RLPD vs brax's SAC on ant, population scaling, a paper-scale WSRL chunk, host time.
# Refuses without a GPU (exit code 2); `python benchmarks/gpu.py --allow-cpu` is the smoke run.
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/gpu.py --json runs/bench_gpu.json

# PyTorch Geometric, the peer of benchmarks/refactor_pyg.py (REFACTOR's GNN throughput), in its own venv too.
PYG     := benchmarks/.venv-pyg
$(PYG)/.installed: benchmarks/requirements-pyg.txt
	$(if $(wildcard $(PYG)/bin/python),,$(if $(FOUND_PY),,$(error $(NO_PY))))
	@[ -x $(PYG)/bin/python ] || $(FOUND_PY) -m venv $(PYG)
	echo '*' > $(PYG)/.gitignore
	$(PYG)/bin/pip install --quiet --upgrade pip
	$(PYG)/bin/pip install --quiet -r benchmarks/requirements-pyg.txt
	touch $@

# Twice: each library's default threads, then both on one thread (the fairer figure on a loaded machine).
bench-pyg: $(STAMP) $(PYG)/.installed metamath
	$(BIN)/python benchmarks/refactor_pyg.py --json runs/bench_refactor_pyg_default.json
	XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
		$(BIN)/python benchmarks/refactor_pyg.py --torch-threads 1 --json runs/bench_refactor_pyg_1thread.json

# set.mm and the reference C verifier (Debian: metamath-databases, metamath) for REFACTOR, installed when absent.
MM_PKGS := metamath-databases metamath
metamath:
	@if [ -f /usr/share/metamath/databases/set.mm ] && command -v metamath >/dev/null; then \
		echo "set.mm and metamath are installed ($$(dpkg -L metamath-databases 2>/dev/null | grep '/set.mm$$'))"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y $(MM_PKGS) || { apt-get update && apt-get install -y $(MM_PKGS); }; \
	else echo "make metamath: installing set.mm needs root and apt-get; run: sudo apt-get install -y $(MM_PKGS)" \
		"(Debian/Ubuntu), or point METAMATH_SET_MM at a set.mm you have" >&2; exit 1; fi

clean:
	rm -rf $(VENV) .jax_cache runs
