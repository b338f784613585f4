# The README's commands. Each target creates .venv if it is missing and installs the project
# (editable, with its test and free-energy extras). The install is idempotent: a stamp file records the hash of
# setup.cfg + pyproject.toml, and pip only runs again when they change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mlff-installed
DEPS_HASH := $(shell cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)

.PHONY: setup demo test bench bench-fe clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

setup: $(PY)
	@if [ "$$(cat $(STAMP) 2>/dev/null)" != "$(DEPS_HASH)" ]; then \
		echo "installing mlff and its dependencies into $(VENV) (first time: several GB for torch)"; \
		$(PY) -m pip install --quiet -e ".[test,fe]" && echo "$(DEPS_HASH)" > $(STAMP); \
	else \
		echo "$(VENV) is up to date"; \
	fi

demo: setup
	$(VENV)/bin/mlff demo

# two pytest-xdist workers (one torch thread each, tests/conftest.py), a test file per worker;
# the 30 slowest tests are listed at the end (the suite is kept under about 30 min with install)
test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=30

bench: setup
	$(PY) benchmarks/neighbors.py
	$(PY) benchmarks/mace_vs_peer.py
	$(PY) benchmarks/ensemble_cost.py
	$(PY) benchmarks/openmm_md.py
	$(PY) benchmarks/imported_vs_peer.py
	$(PY) benchmarks/train_vs_peer.py
	$(PY) benchmarks/scale.py
	$(PY) benchmarks/longrange_cost.py
	$(PY) benchmarks/longrange_vs_torchpme.py
	$(PY) benchmarks/soak.py
	$(PY) benchmarks/d3.py
	$(PY) benchmarks/export_aot.py
	$(PY) benchmarks/newest_torch.py

# free-energy validations: hours on 2 cores, resumable (rerun after a stop)
bench-fe: setup
	$(PY) benchmarks/lj_widom.py
	$(PY) benchmarks/lj_insertion.py
	$(PY) benchmarks/freesolv.py
	$(PY) benchmarks/freesolv_ml.py
	$(PY) benchmarks/freesolv_ml.py --molecules ethylamine pyrrole dimethyl_ether acetaldehyde
	$(PY) benchmarks/ml_correction_cost.py
	$(PY) benchmarks/rbfe_hostguest.py mm
	$(PY) benchmarks/rbfe_hostguest.py ml
	$(PY) benchmarks/rbfe_hostguest.py report

clean-venv:
	rm -rf $(VENV)
