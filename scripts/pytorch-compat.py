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
5. The small CNN 1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10, built and trained
   for one epoch in PyTorch and saved as a bare state dict, loads in
   advgrad with --arch and --act and gives PyTorch's test accuracy, and
   `advgrad grads` gives PyTorch's loss and input gradient ([N, 1, 28, 28])
   on the same images.

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


sys.path.insert(0, os.path.join(ROOT, "benches", "peers"))
from advgrad_arch import input_shape, sequential  # noqa: E402

SMALL_CNN = "1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10"


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
    shaped = x.reshape(-1, *input_shape(meta["arch"]))
    a_torch, a_adv = torch_accuracy(model, shaped, y), advgrad_accuracy(path)
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

    cnn_check(x, y)
    if "x" in meta["arch"].split("-")[0]:
        print("ok (the half-precision checks below take an MLP file)")
        return

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


def cnn_check(x, y):
    """Item 5 of the module docs."""
    torch.manual_seed(0)
    train_x = torch.from_numpy(idx(f"{DATA}/train-images-idx3-ubyte.gz").astype(np.float32) / 255)
    train_y = torch.from_numpy(idx(f"{DATA}/train-labels-idx1-ubyte.gz").astype(np.int64))
    model = sequential(SMALL_CNN, "relu")
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for i in range(0, 60000, 128):  # one epoch in file order
        xb, yb = train_x[i:i + 128].reshape(-1, 1, 28, 28), train_y[i:i + 128]
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
    images = x.reshape(-1, 1, 28, 28)
    n = 128
    xg = images[:n].clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(xg), y[:n])
    loss.backward()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cnn_from_torch.safetensors")
        save_file(model.state_dict(), out)
        flags = ["--arch", SMALL_CNN, "--act", "relu"]
        a_torch, a_adv = torch_accuracy(model, images, y), advgrad_accuracy(out, *flags)
        print(f"PyTorch's CNN state_dict: {a_torch:.4f} in PyTorch; advgrad eval: {a_adv:.4f}")
        assert abs(a_torch - a_adv) < 1e-3, "accuracies differ"
        grads = os.path.join(tmp, "grads.safetensors")
        subprocess.run([ADVGRAD, "grads", "--model", out, *flags, "--device", "cpu", "--limit", str(n),
                        "--out", grads], check=True, capture_output=True)
        with safe_open(grads, "pt") as f:
            g_adv, loss_adv = f.get_tensor("input"), float(f.metadata()["loss"])
    g_torch = xg.grad
    assert tuple(g_adv.shape) == (n, 1, 28, 28), g_adv.shape
    rel = ((g_adv - g_torch).abs().max() / g_torch.abs().max()).item()
    print(f"CNN input gradient on {n} test images: loss {loss_adv:.6f} (PyTorch {loss.item():.6f}); "
          f"max |difference| / max |gradient| = {rel:.2e}")
    assert abs(loss_adv - loss.item()) < 1e-4 * max(1.0, loss.item()), "losses differ"
    assert rel < 1e-3, "input gradients differ"


if __name__ == "__main__":
    main()
