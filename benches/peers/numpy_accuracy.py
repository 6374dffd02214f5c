"""The accuracy reference: the training and attack recipes of benches/RESULTS.md in NumPy.

MLP 784-256-256-10 ReLU, PyTorch's default init U(±1/√fan_in), float32,
batch 128, a fresh permutation per epoch; SGD (lr 0.1) or Adam (lr 1e-3,
β = 0.9/0.999, ε = 1e-8). Then test accuracy clean, under FGSM at eps 0.1 and
under PGD-20 (step 0.01, no random start) over the 10k test images in batches
of 1000. Needs only numpy; reads /usr/share/datasets/fashion-mnist (or
$ADVGRAD_DATA).

    python3 benches/peers/numpy_accuracy.py --seed 0 --optim sgd --epochs 5
"""
import argparse
import gzip
import os

import numpy as np


def idx(path):
    b = gzip.open(path).read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b[4 + 4 * nd:], dtype=np.uint8).reshape(dims)


def load():
    d = os.environ.get("ADVGRAD_DATA", "/usr/share/datasets/fashion-mnist") + "/"
    X = idx(d + "train-images-idx3-ubyte.gz").reshape(60000, -1).astype(np.float32) / 255
    Y = idx(d + "train-labels-idx1-ubyte.gz").astype(np.int64)
    Xt = idx(d + "t10k-images-idx3-ubyte.gz").reshape(10000, -1).astype(np.float32) / 255
    Yt = idx(d + "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return X, Y, Xt, Yt


def draw(seed, epochs):
    """PyTorch-style initial weights [W0, b0, W1, b1, W2, b2] and one permutation per epoch."""
    rng = np.random.default_rng(seed)
    sizes = [784, 256, 256, 10]
    params = []
    for i, o in zip(sizes[:-1], sizes[1:]):
        b = 1 / np.sqrt(i)
        params.append(rng.uniform(-b, b, (o, i)).astype(np.float32))
        params.append(rng.uniform(-b, b, o).astype(np.float32))
    orders = [rng.permutation(60000) for _ in range(epochs)]
    return params, orders


def run(params, orders, optim):
    """Trains `params` in place over `orders`; returns (clean, fgsm, pgd20) test accuracy."""
    X, Y, Xt, Yt = load()
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]

    def forward(x):
        hs = [x]
        h = x
        for layer in range(3):
            z = h @ params[2 * layer].T + params[2 * layer + 1]
            h = np.maximum(z, 0) if layer < 2 else z
            hs.append(h)
        return hs

    def gradients(x, y, want_params=True):
        n = len(y)
        hs = forward(x)
        z = hs[-1]
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        d = p
        d[np.arange(n), y] -= 1
        d /= n
        grads = [None] * 6
        for layer in (2, 1, 0):
            if want_params:
                grads[2 * layer] = d.T @ hs[layer]
                grads[2 * layer + 1] = d.sum(0)
            d = d @ params[2 * layer]
            if layer > 0:
                d = d * (hs[layer] > 0)
        return grads, d

    t = 0
    for perm in orders:
        for s in range(0, 60000, 128):
            ix = perm[s:s + 128]
            grads, _ = gradients(X[ix], Y[ix])
            t += 1
            for j, g in enumerate(grads):
                if optim == "sgd":
                    params[j] -= 0.1 * g
                else:
                    m[j] = 0.9 * m[j] + 0.1 * g
                    v[j] = 0.999 * v[j] + 0.001 * g * g
                    params[j] -= (1e-3 / (1 - 0.9 ** t)) * m[j] / (np.sqrt(v[j] / (1 - 0.999 ** t)) + 1e-8)

    def accuracy(x):
        return (forward(x)[-1].argmax(1) == Yt).mean()

    eps = 0.1
    fgsm = np.empty_like(Xt)
    pgd = np.empty_like(Xt)
    for s in range(0, 10000, 1000):
        x, y = Xt[s:s + 1000], Yt[s:s + 1000]
        _, g = gradients(x, y, False)
        fgsm[s:s + 1000] = np.clip(x + eps * np.sign(g), 0, 1)
        a = x.copy()
        for _ in range(20):
            _, g = gradients(a, y, False)
            a = np.clip(np.clip(a + 0.01 * np.sign(g), x - eps, x + eps), 0, 1)
        pgd[s:s + 1000] = a
    return accuracy(Xt), accuracy(fgsm), accuracy(pgd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--optim", choices=["sgd", "adam"], default="sgd")
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    params, orders = draw(args.seed, args.epochs)
    clean, fgsm, pgd = run(params, orders, args.optim)
    print(f"numpy seed {args.seed} {args.optim} {args.epochs} epochs: "
          f"clean {clean:.4f} fgsm {fgsm:.4f} pgd20 {pgd:.4f}")


if __name__ == "__main__":
    main()
