"""The small CNN in PyTorch and in advgrad from identical initial weights and
identical batch order, trained with Adam 1e-3 at batch 128.

PyTorch draws its default initialisation (seeded) and NumPy one permutation
of the training set per epoch; both go to a folder (init.safetensors in
advgrad's model format, order.u32). PyTorch trains on that order and reports
test accuracy clean, under FGSM (eps 0.1) and under PGD-20 (step 0.01, no
random start); then `cargo run --release --example 07_same_weights -- DIR
EPOCHS adam 1e-3` does the same in advgrad. With the randomness shared, what
is left between the two is float32 summation order (and the chaos that
amplifies it over thousands of steps), so this separates a difference in
the math from a difference in luck between seeds (`cnn_accuracy.py`).

    benches/peers/.venv/bin/python benches/peers/cnn_same_weights.py [--seeds 0 1 2] [--epochs 5]
"""
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from advgrad_arch import sequential  # noqa: E402
from cnn_common import ROOT, SMALL_CNN, images, seed_comparison_args  # noqa: E402

EPS, PGD_STEPS, PGD_ALPHA = 0.1, 20, 0.01


def attack(model, x, y, steps, alpha):
    """FGSM (steps None) or PGD without a random start, in the L-inf ball
    of radius EPS around x, clipped to [0, 1]."""
    adv = x.clone()
    for _ in range(steps or 1):
        adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(adv), y)
        (g,) = torch.autograd.grad(loss, adv)
        step = EPS if steps is None else alpha
        adv = torch.min(torch.max(adv.detach() + step * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    return adv


def accuracy(model, xs, ys, steps=None, alpha=None, adversarial=False):
    hits = 0
    for i in range(0, len(xs), 1000):
        x, y = xs[i:i + 1000], ys[i:i + 1000]
        if adversarial:
            x = attack(model, x, y, steps, alpha)
        with torch.no_grad():
            hits += (model(x).argmax(1) == y).sum().item()
    return hits / len(xs)


def run_seed(seed, epochs, train, test):
    torch.manual_seed(seed)
    model = sequential(SMALL_CNN)
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(train[0])) for _ in range(epochs)]
    with tempfile.TemporaryDirectory() as tmp:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(tmp, "init.safetensors"),
                  metadata={"arch": SMALL_CNN, "activation": "relu"})
        np.concatenate(orders).astype("<u4").tofile(os.path.join(tmp, "order.u32"))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        (x, y), (xs, ys) = train, test
        for order in orders:
            order = torch.from_numpy(order.astype(np.int64))
            for i in range(0, len(order), 128):
                b = order[i:i + 128]
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[b]), y[b]).backward()
                opt.step()
            print(f"seed {seed} PyTorch : epoch done", file=sys.stderr, flush=True)
        model.eval()
        row = (accuracy(model, xs, ys),
               accuracy(model, xs, ys, None, None, adversarial=True),
               accuracy(model, xs, ys, PGD_STEPS, PGD_ALPHA, adversarial=True))
        print(f"seed {seed} PyTorch : clean {row[0]:.4f} fgsm {row[1]:.4f} pgd20 {row[2]:.4f}", flush=True)
        out = subprocess.run(["cargo", "run", "--quiet", "--release", "--example", "07_same_weights", "--",
                              tmp, str(epochs), "adam", "1e-3"],
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
        print(f"seed {seed} {out}", flush=True)
        theirs = [float(v) for v in out.split()[3::2]]
    return row, tuple(theirs)


def main():
    args = seed_comparison_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    train, test = images("train"), images("t10k")
    rows = [run_seed(s, args.epochs, train, test) for s in args.seeds]
    for i, name in enumerate(["clean", "fgsm", "pgd20"]):
        t = statistics.mean(r[0][i] for r in rows)
        a = statistics.mean(r[1][i] for r in rows)
        print(f"mean {name:5} over seeds {args.seeds}: PyTorch {100 * t:.2f}%  advgrad {100 * a:.2f}%  "
              f"difference {100 * (a - t):+.2f} points")


if __name__ == "__main__":
    main()
