"""Writes the .pth fixtures of tests/pth.rs (run once; the files are committed).

    /work/main/.torch/bin/python crates/cnn-models/tests/data/make_pth_fixtures.py

Made with torch 2.15.0. Every value is a formula of its position, so the Rust test computes
what each tensor must hold without reading anything PyTorch wrote:
tensor number t (in the order below), element i (row-major) holds (t + 1) + i / 100.
"""
from collections import OrderedDict
from pathlib import Path

import torch

HERE = Path(__file__).parent

# Names and shapes as torchvision gives them (a conv, its BatchNorm, a classifier), small.
SHAPES = [
    ("conv1.weight", (4, 3, 3, 3)),
    ("bn1.weight", (4,)),
    ("bn1.bias", (4,)),
    ("bn1.running_mean", (4,)),
    ("bn1.running_var", (4,)),
    ("fc.weight", (2, 4)),
    ("fc.bias", (2,)),
]


def state_dict(prefix=""):
    sd = OrderedDict()
    for t, (name, shape) in enumerate(SHAPES):
        n = 1
        for d in shape:
            n *= d
        sd[prefix + name] = (t + 1 + torch.arange(n, dtype=torch.float32) / 100).reshape(shape)
    # BatchNorm's step counter (int64), which the readers skip.
    sd[prefix + "bn1.num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
    return sd


# What torch.save(model.state_dict()) writes for a plain model.
torch.save(state_dict(), HERE / "bare.pth")
# A training script's checkpoint of a DataParallel model: the state dict under a key,
# every name prefixed with `module.`, beside other entries.
torch.save(
    {"epoch": 3, "arch": "tiny", "state_dict": state_dict("module."), "best_acc1": 0.5},
    HERE / "wrapped_dataparallel.pth",
)
# timm / detectron style: the weights under `model`.
torch.save({"model": state_dict(), "optimizer": {"lr": 0.1}}, HERE / "model_key.pth")
# A pickle with no tensors at all (e.g. a saved config): not a state dict.
torch.save({"epoch": 3, "note": "no tensors here", "lrs": [0.1, 0.01]}, HERE / "not_a_state_dict.pth")
