"""PyTorch's own float32 error, against its float64, at the weights and inputs precision.rs uses.

Writes pytorch_f32.tsv beside this file: one row per (network, mode, quantity), the quantity's
relative error ||f32 - f64|| / ||f64||, for the tests' tolerances (10x each figure).
Needs PyTorch and torchvision (e.g. the venv of ../../../../shared/bench/torch_baseline.py). Run:

    CNN_PRECISION_DUMP=/tmp/precision cargo test --release -p cnn-models --test precision
    python measure_pytorch.py /tmp/precision

The first writes each network's weights and inputs (and this project's errors, *.ours.tsv);
this loads them into torchvision's modules, runs float32 and float64 in eval and train mode
(dropout with one fixed mask in both types), and counts PyTorch's own ReLU decisions that
differ between the types: where there are some, its figure for what lies upstream is a
kink's, not a rounding's, and the script says so."""
import os, sys, zlib, torch, torch.nn as nn, torchvision
from safetensors.torch import load_file

ARCHS = ["alexnet", "alexnet-d2l", "resnet18", "resnet34"]


def d2l_alexnet(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten(),
        nn.Linear(6400, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(4096, num_classes))


class PoolFlatten(nn.Module):
    """d2l's Flatten after the 5x5 adaptive average pool this project's d2l AlexNet adds
    (a no-op at 224 px; it lets the same weights run at 97)."""
    def forward(self, x):
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 5), 1)


class FixedDropout(nn.Module):
    """Dropout(0.5) whose mask is drawn once, from a fixed seed, in float64: the same in both types."""
    def __init__(self, seed):
        super().__init__()
        self.seed, self.mask = seed, None

    def forward(self, x):
        if not self.training:
            return x
        if self.mask is None or self.mask.shape != x.shape:
            g = torch.Generator().manual_seed(self.seed)
            self.mask = (torch.rand(x.shape, generator=g, dtype=torch.float64) >= 0.5).double() * 2.0
        return x * self.mask.to(x.dtype)


def build(arch, weights, dtype):
    if arch == "alexnet-d2l":
        m = d2l_alexnet()
        m[13] = PoolFlatten()
    else:
        m = getattr(torchvision.models, arch)(num_classes=10)
    for name, mod in list(m.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.Dropout):
                # crc32, not hash(): str hashes change from one Python process to the next.
                seed = zlib.crc32(f"{name}.{child_name}".encode()) & 0xFFFF
                setattr(mod, child_name, FixedDropout(seed))
            if isinstance(child, nn.ReLU):
                child.inplace = False
    missing, unexpected = m.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    return m.to(dtype)


def run(m, x, y, train):
    relus = []
    hooks = [mod.register_forward_hook(lambda mod, i, o: relus.append(o.detach().clone()))
             for mod in m.modules() if isinstance(mod, nn.ReLU)]
    m.train(train)
    m.zero_grad()
    logits = m(x)
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    for h in hooks:
        h.remove()
    q = {"logits": logits.detach(), "loss": loss.detach().reshape(1)}
    q.update({f"grad.{k}": p.grad for k, p in m.named_parameters()})
    if train:
        q.update({f"after.{k}": v for k, v in m.state_dict().items() if "running" in k})
    return q, relus


def main(folder):
    rows = ["# PyTorch %s float32 against float64 at precision.rs's weights and inputs "
            "(measure_pytorch.py); relu_flips: PyTorch's own ReLU decisions that differ" % torch.__version__,
            "arch\tmode\tquantity\tpytorch_f32_error\trelu_flips"]
    for arch in ARCHS:
        weights = load_file(os.path.join(folder, f"{arch}.weights.safetensors"))
        inputs = load_file(os.path.join(folder, f"{arch}.input.safetensors"))
        for mode in ("eval", "train"):
            x = inputs[f"input_{mode}"].double()
            y = inputs["labels"]
            ref, ref_relus = run(build(arch, weights, torch.float64), x, y, mode == "train")
            ours, relus = run(build(arch, weights, torch.float32), x.float(), y, mode == "train")
            flips = sum(int(((a > 0) != (b > 0)).sum()) for a, b in zip(relus, ref_relus))
            if flips:
                print(f"{arch} {mode}: PyTorch's float32 decides {flips} ReLUs otherwise", file=sys.stderr)
            for k in sorted(ref):
                err = ((ours[k].double() - ref[k]).norm() / ref[k].norm().clamp_min(1e-300)).item()
                rows.append(f"{arch}\t{mode}\t{k}\t{err:.3e}\t{flips}")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pytorch_f32.tsv")
    with open(out, "w") as f:
        f.write("\n".join(rows) + "\n")
    print("wrote", out, len(rows) - 2, "rows")


if __name__ == "__main__":
    main(sys.argv[1])
