# Two commands do everything on a fresh machine: `make demo` (main job on the bundled sample) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

# torch is pinned here (a CPU build on this machine's disk); setup.cfg keeps a range for real users.
$(STAMP): setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,web,video,onnx,tensorboard]"
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/python cli.py preprocess sample
	$(BIN)/python cli.py prior-plot
# ~3 minutes on a quiet 2-core CPU: the tiny network, CE, on the sample shards; rerunning resumes (a no-op when done)
	$(BIN)/python cli.py fit --data artifacts/shards/sample --out artifacts/runs/demo --model tiny --loss ce \
		--batch-size 5 --steps 1500 --lr 1e-3 --save-every 500 $(if $(wildcard artifacts/runs/demo/last.pt),--resume)

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf artifacts/shards artifacts/runs artifacts/*.png

# The loss study (l2 vs ce vs focal, equal budgets) on the bundled sample; report in artifacts/study/report.md.
.PHONY: study
study: install
	$(BIN)/python cli.py study
