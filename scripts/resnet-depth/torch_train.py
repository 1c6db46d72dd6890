"""PyTorch's side of compare.sh: one ResNet trained on a folder with train/ and test/ class
folders, with the recipe compare.sh gives this project's `cnn train`. Prints one line per
epoch and a final RESULT line. `--drop-last` drops each epoch's last partial batch (as
`cnn train --drop-last`); `--save FILE` writes the final `state_dict` as safetensors
(torchvision's names, as this project's checkpoints), for `recalibrate.py`. Needs torch and
torchvision (the venv of ../../../shared/bench/torch_baseline.py); not part of CI.

    python torch_train.py DATA ARCH --size 64 --epochs 5 --lr 1e-3 --batch 64 --seed 0"""
import argparse, time, torch, torch.nn as nn, torchvision
from torchvision import transforms as T

p = argparse.ArgumentParser()
p.add_argument("data"); p.add_argument("arch")
p.add_argument("--size", type=int, default=64); p.add_argument("--epochs", type=int, default=5)
p.add_argument("--lr", type=float, default=1e-3); p.add_argument("--batch", type=int, default=64)
p.add_argument("--seed", type=int, default=0); p.add_argument("--threads", type=int, default=2)
p.add_argument("--drop-last", action="store_true"); p.add_argument("--save")
a = p.parse_args()
torch.manual_seed(a.seed); torch.set_num_threads(a.threads)
norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
train = torchvision.datasets.ImageFolder(f"{a.data}/train", T.Compose(
    [T.RandomResizedCrop(a.size), T.RandomHorizontalFlip(), T.ToTensor(), norm]))
test = torchvision.datasets.ImageFolder(f"{a.data}/test", T.Compose(
    [T.Resize(a.size), T.CenterCrop(a.size), T.ToTensor(), norm]))
loader = lambda ds, shuffle: torch.utils.data.DataLoader(
    ds, a.batch, shuffle=shuffle, num_workers=2, drop_last=shuffle and a.drop_last)
model = getattr(torchvision.models, a.arch)(num_classes=len(train.classes))
opt = torch.optim.Adam(model.parameters(), lr=a.lr)
start = time.time()
for epoch in range(1, a.epochs + 1):
    model.train(); total = correct = 0; loss_sum = 0.0
    for x, y in loader(train, True):
        opt.zero_grad(); out = model(x); loss = nn.functional.cross_entropy(out, y); loss.backward(); opt.step()
        loss_sum += loss.item() * len(y); total += len(y); correct += (out.argmax(1) == y).sum().item()
    model.eval(); t_total = t_correct = 0
    with torch.no_grad():
        for x, y in loader(test, False):
            t_correct += (model(x).argmax(1) == y).sum().item(); t_total += len(y)
    print(f"epoch {epoch} loss {loss_sum / total:.4f} train_acc {correct / total:.4f} "
          f"test_acc {t_correct / t_total:.4f} elapsed {time.time() - start:.0f}s", flush=True)
print(f"RESULT arch={a.arch} seed={a.seed} loss={loss_sum / total:.4f} train_acc={correct / total:.4f} "
      f"test_acc={t_correct / t_total:.4f} seconds={time.time() - start:.0f}")
if a.save:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, a.save)
