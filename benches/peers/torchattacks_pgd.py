"""PGD-20 on the small CNN (1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10) in
advgrad beside torchattacks' PGD, on the same weights and images: L∞ eps
0.1, step 0.01, 20 steps, no random start (so both are deterministic and
should agree up to float32 summation order). The weights are a PyTorch
model trained for --epochs epochs with Adam 1e-3 (seed 0), saved as a bare
state dict and loaded by `advgrad attack --arch ... --act relu`. Passes when
the robust accuracies are within half a point.

    benches/peers/.venv/bin/python benches/peers/torchattacks_pgd.py [--limit 10000]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torchattacks
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from advgrad_arch import sequential  # noqa: E402
from cnn_common import ADVGRAD, SMALL_CNN, images, train  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    (x, y), (xs, ys) = images("train"), images("t10k", args.limit)
    model = sequential(SMALL_CNN)
    train(model, x, y, args.epochs, torch.optim.Adam(model.parameters(), lr=1e-3))
    model.eval()
    attack = torchattacks.PGD(model, eps=0.1, alpha=0.01, steps=20, random_start=False)
    start, correct = time.perf_counter(), 0
    for i in range(0, len(xs), 256):
        adv = attack(xs[i:i + 256], ys[i:i + 256])
        with torch.no_grad():
            correct += (model(adv).argmax(1) == ys[i:i + 256]).sum().item()
    t_seconds, t_robust = time.perf_counter() - start, correct / len(xs)
    with torch.no_grad():
        clean = (model(xs).argmax(1) == ys).float().mean().item()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cnn.safetensors")
        save_file(model.state_dict(), path)
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        out = subprocess.run([ADVGRAD, "attack", "--model", path, "--arch", SMALL_CNN, "--act", "relu",
                              "--attack", "pgd", "--eps", "0.1", "--steps", "20", "--alpha", "0.01",
                              "--limit", str(args.limit), "--device", "cpu", "--json", "--quiet"],
                             check=True, capture_output=True, text=True, env=env).stdout
    report = json.loads(out.strip().splitlines()[-1])
    a_robust, a_seconds = report["results"][0]["robust_accuracy"], report["results"][0]["seconds"]
    print(f"{args.limit} test images, clean accuracy {100 * clean:.2f}% (advgrad {100 * report['clean_accuracy']:.2f}%)")
    print(f"torchattacks PGD-20: robust {100 * t_robust:.2f}% in {t_seconds:.1f} s")
    print(f"advgrad PGD-20:      robust {100 * a_robust:.2f}% in {a_seconds:.1f} s")
    print(f"difference {100 * (a_robust - t_robust):+.2f} points")
    sys.exit(0 if abs(a_robust - t_robust) <= 0.005 else 1)


if __name__ == "__main__":
    main()
