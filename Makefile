# Two commands do all set-up on a fresh machine (Python 3.11 + pip):
#   make demo   installs what is missing, then runs the main job on the embedded default data
#   make test   installs what is missing, then runs the linter and the test suite
#   make lint   the linter and the format check alone (ruff, config in ruff.toml); make unit: the tests without fairseq runs
#   make render rewrites every results table in README.md and docs/ from its file under results/
# Everything is installed into .venv inside the project folder (ignored by git).
# Installing is idempotent: a stamp file records a finished install, pip skips what is present.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.mdnas-installed
# Pinned: torch must be installed before fairseq-fixed, which is built against it.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
FAIRSEQ_PIN := fairseq-fixed==0.12.3.1
FAIRSEQ_NEEDS := cffi cython hydra-core==1.3.2 omegaconf==2.3.0 regex sacrebleu tqdm bitarray \
	scikit-learn packaging "numpy<2" scipy
# numpy<2: fairseq 0.12 uses numpy.compat; mlxtend 0.23.4 / pandas<3 are the releases that accept numpy 1.x
COMPAT_PINS := "numpy<2" "pandas<3" mlxtend==0.23.4

.PHONY: install demo test lint unit bench render clean-venv

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.py
	@# graphviz's `dot` draws genotypes (mdnas-draw, mdnas-report); Debian package, needs root
	command -v dot >/dev/null || { apt-get update -qq && apt-get install -y -qq graphviz; } || \
		echo "WARNING: could not install graphviz (dot); install it to draw genotypes: apt-get install graphviz"
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install $(TORCH_PINS)
	$(PIP) install $(FAIRSEQ_NEEDS)
	$(PY) -c "import fairseq" 2>/dev/null || $(PIP) install --no-build-isolation --no-deps $(FAIRSEQ_PIN)
	$(PIP) install --no-build-isolation -e ".[all]" $(COMPAT_PINS)
	$(PY) -c "import fairseq, torch, mdnas_fairseq; print('installed: torch', torch.__version__, 'fairseq', fairseq.__version__)"
	touch $(STAMP)

demo: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH OMP_NUM_THREADS=1 bash scripts/demo.sh

# Two pytest workers (pytest-xdist), one thread each: the suite is mostly single-threaded fairseq
# processes, so two cores halve its time. A test file stays on one worker (its fixtures run once).
TEST_WORKERS ?= 2

test: install lint
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH OMP_NUM_THREADS=1 $(PY) -m pytest -q --durations=15 \
		-n $(TEST_WORKERS) --dist loadfile tests

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

unit: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow" tests

render: install
	$(PY) scripts/render_results.py

bench: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) benchmarks/lm_search_speed.py

clean-venv:
	rm -rf $(VENV)
