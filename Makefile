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

# The held-out photos of the sample shards (their test split), as paths to the source files
HELDOUT = from pipeline import contract; from pathlib import Path; d = "artifacts/shards/sample"; \
	root = Path(contract.read_manifest(d)["root"]); \
	print(" ".join(str(root / k) for p in contract.shard_paths(d, "test") for k in contract.open_shard(p).keys()))

demo: install
	$(BIN)/colorfast preprocess sample
	$(BIN)/colorfast prior-plot
# ~3-4 minutes on a quiet 2-core CPU: the tiny network, CE, on the sample shards, validated every 100 steps on the
# held-out photo; rerunning resumes (a no-op when done)
	$(BIN)/colorfast fit --data artifacts/shards/sample --out artifacts/runs/demo --model tiny --loss ce \
		--batch-size 5 --steps 1500 --lr 1e-3 --save-every 500 --val-every 100 \
		$(if $(wildcard artifacts/runs/demo/last.pt),--resume)
	$(BIN)/colorfast plot artifacts/runs/demo --out artifacts/curves.png
	$(BIN)/colorfast colorize $$($(BIN)/python -c '$(HELDOUT)') --checkpoint artifacts/runs/demo/last.pt \
		--out artifacts/colorized
	@echo "Look at: artifacts/prior.png (class prior and weights), artifacts/curves.png (loss and validation curves),"
	@echo "  $$(ls artifacts/runs/demo/samples/*.png | tail -1) (last sample grid), artifacts/colorized/ (held-out photo)"
	@echo "Ten photos demonstrate the mechanics; the model is not a colorizer (README, 'What make demo shows')."

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf artifacts/shards artifacts/runs artifacts/colorized artifacts/*.png

# The loss study (l2 vs ce vs focal, equal budgets) on the bundled sample; report in artifacts/study/report.md.
.PHONY: study
study: install
	$(BIN)/colorfast study

# Mutation check of the maths (tools/mutants.py): ~60 single plausible bugs, each in a temporary copy of the tree,
# each must fail a unit test; a table in artifacts/mutants.md. ~5 minutes on 2 quiet cores (~16 loaded); not in `make test`.
.PHONY: mutants
mutants: install
	$(BIN)/python tools/mutants.py --jobs 2
