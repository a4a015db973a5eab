"""`cli.py ARGS...` with torch.backends.cudnn.benchmark = True (the trainer leaves it at PyTorch's default,
False): shows whether autotuned convolution algorithms would change the step times at fixed shapes."""
import os
import runpy
import sys

import torch

sys.path.insert(0, os.getcwd())              # run from the repo root; the repo is not installed there

torch.backends.cudnn.benchmark = True
sys.argv = ["cli.py", *sys.argv[1:]]
runpy.run_path("cli.py", run_name="__main__")
