"""Several Adam training steps of torchvision's ResNet against this project's, from identical
weights on identical batches (issue 29): does `cnn train`'s update differ from PyTorch's
beyond float32 rounding?

Builds torchvision's ARCH (num_classes=10) from --seed, writes its state_dict and a few
fixed batches of real images (from DATA/train, resized to --size, centre-cropped,
normalised with ImageNet's mean and std) to the --out folder, then runs --steps training steps
(model.train(), cross-entropy, torch.optim.Adam at --lr, PyTorch's defaults otherwise; step
k trains on batch (k - 1) % --nbatches) in PyTorch float32 and float64 and in this project
float32 and float64 (crates/cnn-train/examples/adam_steps.rs, through cargo). Prints each
step's loss for all four, the first step's gradients against PyTorch float64's, then for each step in --save-at and each parameter group the
relative difference ||a - ref|| / ||ref|| of the change p_K - p_0 (for BatchNorm running
statistics too), ref being PyTorch float64: the group's figure over all its values, and
the median and maximum over its tensors. Ours f64 against torch f64 says whether the
algorithms are the same; the float32 rows show the rounding scale. Run from the
repository root with the venv that has torch, torchvision and safetensors:

    .torch/bin/python scripts/resnet-depth/one_step.py SPLIT/data resnet34 --out /tmp/one-step

SPLIT/data being the split `compare.sh SPLIT` makes (only its train/ folder is read).
"""
import argparse, os, re, subprocess, sys, time
import torch, torch.nn as nn, torchvision
from torchvision import transforms as T
from safetensors.torch import save_file, load_file

p = argparse.ArgumentParser()
p.add_argument("data"); p.add_argument("arch")
p.add_argument("--out", default="/tmp/one-step")
p.add_argument("--steps", type=int, default=5)
p.add_argument("--save-at", default="1,5")
p.add_argument("--batch", type=int, default=64)
p.add_argument("--nbatches", type=int, default=2)
p.add_argument("--size", type=int, default=64)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--kernels", default="ours", help="this project's CPU kernel set (adam_steps --kernels)")
a = p.parse_args()
save_at = [int(k) for k in a.save_at.split(",")]
assert max(save_at) <= a.steps, "--save-at beyond --steps"
os.makedirs(a.out, exist_ok=True)
torch.set_num_threads(a.threads)
CLASSES = 10

# ---- initial weights and batches ----
torch.manual_seed(a.seed)
init = {k: v.clone().contiguous() for k, v in
        getattr(torchvision.models, a.arch)(num_classes=CLASSES).state_dict().items()
        if not k.endswith("num_batches_tracked")}
save_file(init, f"{a.out}/init.safetensors")

norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
ds = torchvision.datasets.ImageFolder(
    f"{a.data}/train", T.Compose([T.Resize(a.size), T.CenterCrop(a.size), T.ToTensor(), norm]))
assert len(ds.classes) == CLASSES, f"{a.data}/train has {len(ds.classes)} classes, not {CLASSES}"
by_class = [[i for i, (_, c) in enumerate(ds.samples) if c == k] for k in range(CLASSES)]
need = a.batch * a.nbatches
order = [by_class[j % CLASSES][j // CLASSES] for j in range(need)]  # classes interleaved
g = torch.Generator().manual_seed(a.seed)
order = [order[i] for i in torch.randperm(need, generator=g)]
batches = {}
for b in range(a.nbatches):
    items = [ds[i] for i in order[b * a.batch:(b + 1) * a.batch]]
    batches[f"x.{b}"] = torch.stack([x for x, _ in items]).contiguous()
    batches[f"y.{b}"] = torch.tensor([y for _, y in items], dtype=torch.int64)
save_file(batches, f"{a.out}/batches.safetensors")

# ---- PyTorch ----
def torch_run(dtype):
    torch.manual_seed(a.seed)
    model = getattr(torchvision.models, a.arch)(num_classes=CLASSES)
    model.load_state_dict(init, strict=False)  # num_batches_tracked stays 0, as fresh
    model = model.to(dtype).train()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    losses, saved = [], {}
    for k in range(1, a.steps + 1):
        b = (k - 1) % a.nbatches
        x, y = batches[f"x.{b}"].to(dtype), batches[f"y.{b}"]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if k == 1:
            grads = {n: q.grad.detach().to(torch.float64).clone() for n, q in model.named_parameters()}
        opt.step()
        losses.append(loss.item())
        if k in save_at:
            saved[k] = {n: t.detach().to(torch.float64).clone()
                        for n, t in model.state_dict().items() if n in init}
    return losses, saved, grads

# ---- this project ----
def ours_run(dtype):
    prefix = f"{a.out}/ours_{dtype}"
    cmd = ["cargo", "run", "--release", "-q", "-p", "cnn-train", "--example", "adam_steps", "--",
           "--arch", a.arch, "--classes", str(CLASSES), "--weights", f"{a.out}/init.safetensors",
           "--batches", f"{a.out}/batches.safetensors", "--steps", str(a.steps),
           "--lr", repr(a.lr), "--dtype", dtype, "--save-at", a.save_at, "--out-prefix", prefix,
           "--grads", f"{prefix}_grads1.safetensors", "--kernels", a.kernels]
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"adam_steps failed ({' '.join(cmd)}):\n{r.stderr}")
    losses = [float(m.group(2)) for m in re.finditer(r"^STEP (\d+) LOSS (\S+)$", r.stdout, re.M)]
    assert len(losses) == a.steps, r.stdout
    saved = {k: {n: t.to(torch.float64) for n, t in load_file(f"{prefix}_step{k}.safetensors").items()}
             for k in save_at}
    grads = {n: t.to(torch.float64) for n, t in load_file(f"{prefix}_grads1.safetensors").items()}
    return losses, saved, grads

runs = {}
for name, fn, arg in [("torch f64", torch_run, torch.float64), ("torch f32", torch_run, torch.float32),
                      ("ours f64", ours_run, "f64"), ("ours f32", ours_run, "f32")]:
    t0 = time.time()
    runs[name] = fn(arg)
    print(f"# {name}: {a.steps} steps in {time.time() - t0:.0f} s", flush=True)

# ---- report ----
print(f"\n{a.arch}, batch {a.batch} x {a.nbatches} batches of {a.size} px, Adam lr {a.lr}, seed {a.seed}, "
      f"this project's kernels: {a.kernels}")
print("\nloss per step (rel. difference to torch f64 in brackets)")
print(f"{'step':>4} {'torch f64':>20} {'torch f32':>24} {'ours f64':>24} {'ours f32':>24}")
ref_losses = runs["torch f64"][0]
for k in range(a.steps):
    r = ref_losses[k]
    cells = [f"{runs[n][0][k]:.8f} ({abs(runs[n][0][k] - r) / abs(r):.1e})"
             for n in ["torch f32", "ours f64", "ours f32"]]
    print(f"{k + 1:>4} {r:>20.15f} " + " ".join(f"{c:>24}" for c in cells))

def group(name):
    if "running_mean" in name: return "bn running_mean"
    if "running_var" in name: return "bn running_var"
    if name.startswith("fc."): return "fc"
    if "bn" in name or "downsample.1" in name:
        return "bn weight" if name.endswith("weight") else "bn bias"
    if name.startswith("conv1."): return "conv stem"
    m = re.match(r"(layer\d)\.", name)
    return f"conv {m.group(1)}" if m else "other"

groups = {}
for n in init:
    groups.setdefault(group(n), []).append(n)
order_g = sorted(groups, key=lambda s: (not s.startswith("conv"), s))
comparisons = [("ours f32", "torch f64"), ("torch f32", "torch f64"), ("ours f64", "torch f64")]

def rel(a_, r_):
    d = torch.linalg.vector_norm(a_ - r_).item(); n = torch.linalg.vector_norm(r_).item()
    return d / n if n > 0 else (0.0 if d == 0 else float("inf"))

print("\nstep 1 gradients: ||g - ref g|| / ||ref g||, group total / median tensor / max tensor")
print(f"{'group':<16} " + " ".join(f"{c[0] + ' vs ' + c[1]:>30}" for c in comparisons))
for gname in order_g:
    names = [n for n in groups[gname] if n in runs["torch f64"][2]]
    if not names:
        continue
    cells = []
    for c, r in comparisons:
        got, ref = runs[c][2], runs[r][2]
        dg = torch.cat([got[n].flatten() for n in names]); dr = torch.cat([ref[n].flatten() for n in names])
        per = torch.tensor([rel(got[n], ref[n]) for n in names])
        cells.append(f"{rel(dg, dr):.1e} / {per.median().item():.1e} / {per.max().item():.1e}")
    print(f"{gname:<16} " + " ".join(f"{c:>30}" for c in cells))

for k in save_at:
    print(f"\nafter {k} step(s): ||change - ref change|| / ||ref change||, "
          "group total / median tensor / max tensor")
    print(f"{'group':<16} " + " ".join(f"{c[0] + ' vs ' + c[1]:>30}" for c in comparisons))
    ref = runs["torch f64"][1][k]
    for gname in order_g:
        names = groups[gname]
        cells = []
        for c, _ in comparisons:
            got = runs[c][1][k]
            dg = torch.cat([(got[n] - init[n].double()).flatten() for n in names])
            dr = torch.cat([(ref[n] - init[n].double()).flatten() for n in names])
            per = torch.tensor([rel(got[n] - init[n].double(), ref[n] - init[n].double()) for n in names])
            cells.append(f"{rel(dg, dr):.1e} / {per.median().item():.1e} / {per.max().item():.1e}")
        print(f"{gname:<16} " + " ".join(f"{c:>30}" for c in cells))
