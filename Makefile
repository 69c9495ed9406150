# The two commands of the README:   make demo   and   make test
# Both create the environment (.venv, wheels route) when it is missing.
ENV := $(shell scripts/ensure-env)
PY := $(ENV)/bin/python
MPIEXEC := $(ENV)/bin/mpiexec
NP ?= 2
export UCX_TLS ?= self,sm,tcp
export OMP_NUM_THREADS ?= 1

.PHONY: demo test lint typecheck test-serial test-mpi bench docs clean

demo:
	$(MPIEXEC) -n $(NP) $(PY) -m msfem study studies/demo.toml --out results/demo

test: lint typecheck test-serial test-mpi

lint:
	$(PY) -m ruff check msfem tests benchmarks meshes demos

typecheck:
	$(PY) -m mypy msfem

test-serial:
	$(PY) -m pytest -q tests

test-mpi:
	$(MPIEXEC) -n $(NP) $(PY) -m mpi4py -m pytest -q -p no:cacheprovider tests

bench:
	$(PY) benchmarks/fine.py
	$(PY) benchmarks/offline.py
	$(PY) benchmarks/lod.py
	$(PY) benchmarks/gmsfem.py
	$(PY) benchmarks/fe_hmm.py
	$(PY) benchmarks/atomistic.py
	# 2 ranks: speed-ups against 1 rank and the machine's ceiling, measured in one run
	$(MPIEXEC) -n $(NP) $(PY) benchmarks/offline.py
	$(MPIEXEC) -n $(NP) $(PY) benchmarks/lod.py --repeat 5

docs:  # needs sphinx and myst-parser (pip install -e .[docs])
	$(PY) -m sphinx -b html -W docs/api docs/api/_build

clean:
	rm -rf results .pytest_cache
