"""What the CNN peer scripts share: Fashion-MNIST as tensors, the small CNN's
spec, advgrad's binary, the PyTorch training loop."""
import argparse
import gzip
import os

import numpy as np
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADVGRAD = os.path.join(ROOT, "target", "release", "advgrad")
DATA = os.environ.get("ADVGRAD_DATA", "/usr/share/datasets/fashion-mnist")
SMALL_CNN = "1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10"


def idx(path):
    b = gzip.open(path).read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b[4 + 4 * nd:], dtype=np.uint8).reshape(dims)


def images(split, n=None):
    """The first n images of `train` or `t10k` as [n, 1, 28, 28] in [0, 1], and labels."""
    x = idx(f"{DATA}/{split}-images-idx3-ubyte.gz")[:n].astype(np.float32) / 255
    y = idx(f"{DATA}/{split}-labels-idx1-ubyte.gz")[:n].astype(np.int64)
    return torch.from_numpy(x.reshape(-1, 1, 28, 28).copy()), torch.from_numpy(y)


def train(model, x, y, epochs, opt):
    """`epochs` passes of `opt` over (x, y) in shuffled batches of 128
    (torch's global generator draws the shuffles)."""
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            b = perm[i:i + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    return model


def seed_comparison_args():
    """The options of the scripts that compare over seeds (--seeds, --epochs,
    --threads), parsed; torch gets --threads threads."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    return args
