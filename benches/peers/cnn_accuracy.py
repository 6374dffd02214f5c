"""Accuracy of the small CNN (1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10) with
Adam 1e-3, batch 128, 5 epochs, over seeds 0-2: PyTorch eager against
`advgrad train` on the same recipe (each with its own seeded initialisation
and shuffles). Passes when the means are within 0.5 point.

    benches/peers/.venv/bin/python benches/peers/cnn_accuracy.py [--seeds 0 1 2] [--epochs 5]
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from advgrad_arch import sequential  # noqa: E402
from cnn_common import ADVGRAD, SMALL_CNN, images, seed_comparison_args  # noqa: E402
from cnn_common import train as fit  # noqa: E402


def torch_run(seed, epochs, data, test):
    torch.manual_seed(seed)
    model = sequential(SMALL_CNN)
    (x, y), (xs, ys) = data, test
    fit(model, x, y, epochs, torch.optim.Adam(model.parameters(), lr=1e-3))
    with torch.no_grad():
        return (model(xs).argmax(1) == ys).float().mean().item()


def advgrad_run(seed, epochs, threads, out_path):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run([ADVGRAD, "train", "--arch", SMALL_CNN, "--optim", "adam", "--lr", "1e-3",
                          "--epochs", str(epochs), "--batch", "128", "--seed", str(seed), "--device", "cpu",
                          "--json", "--quiet", "--out", out_path],
                         check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["test_accuracy"]


def main():
    args = seed_comparison_args()
    train, test = images("train"), images("t10k")
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "cnn.safetensors")
            t, a = torch_run(seed, args.epochs, train, test), advgrad_run(seed, args.epochs, args.threads, out)
        rows.append((t, a))
        print(f"seed {seed}: PyTorch {100 * t:.2f}%  advgrad {100 * a:.2f}%", flush=True)
    mt, ma = (statistics.mean(r[i] for r in rows) for i in (0, 1))
    print(f"mean over seeds {args.seeds}: PyTorch {100 * mt:.2f}%  advgrad {100 * ma:.2f}%  "
          f"difference {100 * (ma - mt):+.2f} points")
    sys.exit(0 if abs(ma - mt) <= 0.005 else 1)


if __name__ == "__main__":
    main()
