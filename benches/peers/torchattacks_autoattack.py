"""torchattacks' AutoAttack on an advgrad model file: robust accuracy and seconds.

Loads a model saved by `advgrad train` (safetensors in the layout of a PyTorch
nn.Sequential of Linear and activation layers), takes the first --limit
Fashion-MNIST test images (the IDX .gz files in --data), runs
`torchattacks.AutoAttack(model, norm, eps, version, n_classes=10, seed)` on
them as one batch, on --threads threads, and prints one JSON line:

    {"framework": "torchattacks", "version": "standard", "norm": "Linf",
     "eps": 0.1, "n": 1000, "seed": 0, "clean_accuracy": ..,
     "robust_accuracy": .., "seconds": .., "torch": "..", "torchattacks": ".."}

`seconds` times the AutoAttack call alone. torchattacks' AutoAttack runs its
members with their own defaults (10 iterations for APGD, APGD-T and FAB;
Square with 5000 queries and a rescaled p schedule), each on the images the
previous members left robust. benches/peers/autoattack.sh installs what this
needs into the peers virtualenv and runs it beside `advgrad attack`.

    python torchattacks_autoattack.py --model robust.safetensors [--limit 1000]
        [--eps 0.1] [--norm Linf|L2] [--version standard|plus|rand] [--seed 0]
        [--threads 2] [--data /usr/share/datasets/fashion-mnist]
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from peers import load_split  # noqa: E402  (the peers' IDX reader)


def build_model(path, torch):
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    arch = [int(w) for w in meta.get("arch", "784-256-256-10").split("-")]
    act = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}[
        meta.get("activation", "relu")
    ]
    layers = []
    for i, (a, b) in enumerate(zip(arch, arch[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i + 2 < len(arch):
            layers.append(act())
    mlp = torch.nn.Sequential(*layers)
    mlp.load_state_dict(load_file(path))

    class Flat(torch.nn.Module):
        """The MLP on images [N, 1, 28, 28] (torchattacks' Square wants images)."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.reshape(x.shape[0], -1))

    return Flat(mlp).eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=os.environ.get("ADVGRAD_DATA", "/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--norm", default="Linf", choices=["Linf", "L2"])
    ap.add_argument("--version", default="standard", choices=["standard", "plus", "rand"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    import torchattacks

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    model = build_model(args.model, torch)
    x, y = load_split(args.data, "test")
    x = torch.from_numpy(x[: args.limit]).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(y[: args.limit])
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    attack = torchattacks.AutoAttack(
        model, norm=args.norm, eps=args.eps, version=args.version, n_classes=10, seed=args.seed
    )
    start = time.perf_counter()
    adv = attack(x, y)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        robust = (model(adv).argmax(1) == y).float().mean().item()
        if args.norm == "Linf":
            largest = (adv - x).abs().reshape(len(x), -1).max().item()
        else:
            largest = (adv - x).reshape(len(x), -1).norm(dim=1).max().item()
    print(
        json.dumps(
            {
                "framework": "torchattacks",
                "version": args.version,
                "norm": args.norm,
                "eps": args.eps,
                "n": len(x),
                "seed": args.seed,
                "clean_accuracy": clean,
                "robust_accuracy": robust,
                "max_perturbation": largest,
                "seconds": seconds,
                "threads": args.threads,
                "torch": torch.__version__,
                "torchattacks": torchattacks.__version__,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
