"""Helper run by test_validate.py, with or without torchrun: validate a checkpoint once and write val.jsonl.
usage: ddp_validate.py CHECKPOINT OUT_DIR VAL_LIMIT"""
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from pipeline import contract  # noqa: E402
from trainer import checkpoint, dist  # noqa: E402
from trainer.config import FitConfig  # noqa: E402
from trainer.models import create_model  # noqa: E402
from trainer.validate import Validator  # noqa: E402

ck_path, out, limit = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
ck = checkpoint.load(ck_path)
cfg = replace(FitConfig.from_dict(ck["config"]), out=str(out), val_limit=limit, val_every=0)
info = dist.setup("gloo")
model = create_model(ck["model_name"], ck["out_channels"], ck["model"].get("centers"))
model.load_state_dict(ck["model"])
prior = contract.Prior.load(Path(cfg.data) / contract.PRIOR)
out.mkdir(parents=True, exist_ok=True)
v = Validator(cfg, prior, info, torch.device("cpu"), out, True, steps_per_epoch=1, total=1)
v.run(ck["step"], 0, model, "raw")
dist.cleanup(info)
