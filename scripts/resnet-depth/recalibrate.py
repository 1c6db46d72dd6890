"""Test accuracy of trained ResNets as trained, and again after BatchNorm's running
statistics are recomputed over one pass of augmented training images (the running
averages reset, momentum None: a plain mean over the pass). Tells how much of a model's test
figure is its weights and how much the last steps' running statistics. Takes safetensors
files with torchvision's names: this project's checkpoints (`.../model.safetensors`) or
`torch_train.py --save`. Every model sees the same images in the same order. Prints
`FILE<TAB>as trained %<TAB>recomputed %<TAB>staleness`, the last summed over BatchNorm
layers: the RMS shift of the running mean in recomputed standard deviations plus the mean
|log| of the running variance over the recomputed one. Needs the venv of
../../../shared/bench/torch_baseline.py; not part of CI.

    python recalibrate.py DATA ARCH --size 64 FILE..."""
import argparse, torch, torch.nn as nn, torchvision
from torchvision import transforms as T
from safetensors.torch import load_file

p = argparse.ArgumentParser()
p.add_argument("data"); p.add_argument("arch"); p.add_argument("files", nargs="+")
p.add_argument("--size", type=int, default=64); p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(0)
norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
test = torchvision.datasets.ImageFolder(f"{a.data}/test", T.Compose(
    [T.Resize(a.size), T.CenterCrop(a.size), T.ToTensor(), norm]))
train = torchvision.datasets.ImageFolder(f"{a.data}/train", T.Compose(
    [T.RandomResizedCrop(a.size), T.RandomHorizontalFlip(), T.ToTensor(), norm]))
test_batches = list(torch.utils.data.DataLoader(test, 200))
train_batches = [x for x, _ in torch.utils.data.DataLoader(train, 64, shuffle=True, num_workers=2)]


def accuracy(model):
    model.eval(); correct = total = 0
    with torch.no_grad():
        for x, y in test_batches:
            correct += (model(x).argmax(1) == y).sum().item(); total += len(y)
    return 100 * correct / total


for path in a.files:
    model = getattr(torchvision.models, a.arch)(num_classes=len(test.classes))
    # This project's files hold no `num_batches_tracked` (unused at momentum 0.1); any other
    # missing or unexpected name is an error, not a silently random layer.
    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"{path}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    as_trained = accuracy(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    trained = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    for m in bns:
        m.reset_running_stats(); m.momentum = None
    model.train()
    with torch.no_grad():
        for x in train_batches:
            model(x)
    staleness = sum(((mean - m.running_mean) / m.running_var.sqrt()).pow(2).mean().sqrt().item()
                    + (var / m.running_var).log().abs().mean().item()
                    for m, (mean, var) in zip(bns, trained))
    print(f"{path}\t{as_trained:.2f}\t{accuracy(model):.2f}\t{staleness:.2f}", flush=True)
