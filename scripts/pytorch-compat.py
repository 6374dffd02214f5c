"""Checks advgrad's model files against PyTorch, both ways.

1. Loads a model file advgrad saved into a PyTorch nn.Sequential
   (Linear, activation, Linear, ...) and compares its test accuracy with
   `advgrad eval` on the same file.
2. Saves a PyTorch model's state_dict with safetensors.torch.save_file and
   has `advgrad eval --act relu` load it, comparing accuracies again.
3. The same with the model in bf16 and in f16 (`model.bfloat16()`,
   `model.half()`): the state dict holds BF16 / F16 tensors; advgrad loads
   them as f32, so its accuracy must equal PyTorch's on the same weights
   widened to f32 (exact), and stay within a point of the f32 model's.
4. `advgrad train --save-dtype bf16` (and f16) files load into PyTorch with
   the dtype the metadata names, and score there as in `advgrad eval`.

Run with the peers virtualenv (it has torch):
    benches/peers/.venv/bin/python scripts/pytorch-compat.py MODEL.safetensors
"""
import gzip
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADVGRAD = os.path.join(ROOT, "target", "release", "advgrad")
DATA = os.environ.get("ADVGRAD_DATA", "/usr/share/datasets/fashion-mnist")


def idx(path):
    b = gzip.open(path).read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b[4 + 4 * nd:], dtype=np.uint8).reshape(dims)


def sequential(arch, act):
    widths = [int(w) for w in arch.split("-")]
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append({"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[act]())
    return nn.Sequential(*layers)


def torch_accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def advgrad_accuracy(path, *extra):
    out = subprocess.run([ADVGRAD, "eval", "--model", path, "--json", "--device", "cpu", *extra],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["accuracy"]


def main():
    path = sys.argv[1]
    x = torch.from_numpy(idx(f"{DATA}/t10k-images-idx3-ubyte.gz").reshape(10000, -1).astype(np.float32) / 255)
    y = torch.from_numpy(idx(f"{DATA}/t10k-labels-idx1-ubyte.gz").astype(np.int64))

    with safe_open(path, "pt") as f:
        meta = f.metadata()
    model = sequential(meta["arch"], meta["activation"])
    model.load_state_dict(load_file(path))
    a_torch, a_adv = torch_accuracy(model, x, y), advgrad_accuracy(path)
    print(f"advgrad's file in PyTorch: {a_torch:.4f}; advgrad eval: {a_adv:.4f}")
    assert abs(a_torch - a_adv) < 1e-3, "accuracies differ"

    torch.manual_seed(0)
    fresh = sequential("784-64-10", "relu")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "from_torch.safetensors")
        save_file(fresh.state_dict(), out)
        a_torch, a_adv = torch_accuracy(fresh, x, y), advgrad_accuracy(out, "--act", "relu")
    print(f"PyTorch's state_dict: {a_torch:.4f} in PyTorch; advgrad eval: {a_adv:.4f}")
    assert abs(a_torch - a_adv) < 1e-3, "accuracies differ"

    # A trained model, so that rounding its weights could show.
    trained = sequential(meta["arch"], meta["activation"])
    trained.load_state_dict(load_file(path))
    a_f32 = torch_accuracy(trained, x, y)
    for name, dtype in (("bf16", torch.bfloat16), ("f16", torch.float16)):
        half_model = sequential(meta["arch"], meta["activation"])
        half_model.load_state_dict(load_file(path))
        half_model = half_model.to(dtype)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, f"torch_{name}.safetensors")
            save_file(half_model.state_dict(), out, metadata={"activation": meta["activation"]})
            with safe_open(out, "pt") as f:
                stored = {f.get_tensor(k).dtype for k in f.keys()}
            assert stored == {dtype}, f"PyTorch saved {stored}, not {dtype}"
            widened = half_model.float()
            a_torch, a_adv = torch_accuracy(widened, x, y), advgrad_accuracy(out)
        print(f"PyTorch's {name} state_dict: {a_torch:.4f} in PyTorch (widened to f32); "
              f"advgrad eval: {a_adv:.4f}; the f32 model: {a_f32:.4f}")
        assert abs(a_torch - a_adv) < 1e-3, "accuracies differ"
        assert abs(a_adv - a_f32) < 0.01, f"{name} weights lose more than a point"

    with tempfile.TemporaryDirectory() as tmp:
        for name, dtype in (("bf16", torch.bfloat16), ("f16", torch.float16)):
            out = os.path.join(tmp, f"advgrad_{name}.safetensors")
            subprocess.run([ADVGRAD, "train", "--device", "cpu", "--epochs", "1", "--limit", "5000",
                            "--arch", "784-64-10", "--save-dtype", name, "--out", out, "--quiet"],
                           check=True, capture_output=True)
            with safe_open(out, "pt") as f:
                meta = f.metadata()
                stored = {f.get_tensor(k).dtype for k in f.keys()}
            assert meta["dtype"] == name and stored == {dtype}, (meta, stored)
            model = sequential(meta["arch"], meta["activation"]).to(dtype)
            model.load_state_dict(load_file(out))
            a_torch, a_adv = torch_accuracy(model.float(), x, y), advgrad_accuracy(out)
            print(f"advgrad's --save-dtype {name} file in PyTorch: {a_torch:.4f}; advgrad eval: {a_adv:.4f}")
            assert abs(a_torch - a_adv) < 1e-3, "accuracies differ"
    print("ok")


if __name__ == "__main__":
    main()
