"""The CNN speed comparison of issue 13: advgrad beside PyTorch eager on the
CPU, same machine, same thread count, interleaved rounds, medians.

For each architecture (the small CNN and Madry et al.'s MNIST network, or
those --nets names):
  - one SGD epoch (lr 0.1, batch 128) over the first --train examples,
  - PGD-20 (eps 0.1, step 0.01, no random start, batches of 1000) over the
    first --test test images, on an untrained model,
timed in PyTorch (torch.set_num_threads(--threads)) and with
`advgrad bench --op epoch|pgd --arch A` (RAYON_NUM_THREADS=--threads).
Wrap it in `flock /tmp/advgrad-bench.lock` on a shared machine.

    benches/peers/.venv/bin/python benches/peers/cnn_speed.py --rounds 3 [--nets small madry]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from advgrad_arch import sequential  # noqa: E402
from cnn_common import ADVGRAD, SMALL_CNN, images, train  # noqa: E402

# --nets name: (name in the output, architecture)
NETS = {
    "small": ("small CNN", SMALL_CNN),
    "madry": ("Madry", "1x28x28-c32k5p2-mp2-c64k5p2-mp2-1024-10"),
}


def torch_epoch(arch, x, y):
    torch.manual_seed(0)
    model = sequential(arch)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    start = time.perf_counter()
    train(model, x, y, 1, opt)
    return time.perf_counter() - start


def torch_pgd(arch, x, y, eps=0.1, alpha=0.01, steps=20):
    torch.manual_seed(0)
    model = sequential(arch)
    for p in model.parameters():
        p.requires_grad_(False)
    start = time.perf_counter()
    for i in range(0, len(x), 1000):
        xb, yb = x[i:i + 1000], y[i:i + 1000]
        adv = xb.clone()
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = nn.functional.cross_entropy(model(adv), yb)
            (g,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + alpha * g.sign()
            adv = torch.min(torch.max(adv, xb - eps), xb + eps).clamp(0, 1)
    return time.perf_counter() - start


def advgrad(op, arch, limit, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run([ADVGRAD, "bench", "--op", op, "--arch", arch, "--limit", str(limit),
                          "--repeat", "1", "--json", "--device", "cpu"],
                         check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train", type=int, default=60000)
    ap.add_argument("--test", type=int, default=10000)
    ap.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS),
                    help="which networks to time (default both)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.processor())
    print(f"CPU {cpu}; {args.threads} threads; torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    xt, yt = images("train", args.train)
    xs, ys = images("t10k", args.test)
    times = {}
    for r in range(args.rounds):
        for name, arch in (NETS[key] for key in NETS if key in args.nets):
            for what, run_torch, run_advgrad in (
                ("epoch", lambda: torch_epoch(arch, xt, yt), lambda: advgrad("epoch", arch, args.train, args.threads)),
                ("pgd20", lambda: torch_pgd(arch, xs, ys), lambda: advgrad("pgd", arch, args.test, args.threads)),
            ):
                t, a = run_torch(), run_advgrad()
                times.setdefault((name, what), []).append((t, a))
                print(f"round {r + 1} {name} {what}: PyTorch {t:.2f} s, advgrad {a:.2f} s", flush=True)
    print(f"\nmedians over {args.rounds} rounds ({args.train} training / {args.test} test examples); "
          f"load average now {os.getloadavg()[0]:.1f}")
    for (name, what), pairs in times.items():
        t = statistics.median(p[0] for p in pairs)
        a = statistics.median(p[1] for p in pairs)
        ratios = [p[1] / p[0] for p in pairs]
        print(f"{name:10} {what:6} PyTorch {t:7.2f} s  advgrad {a:7.2f} s  advgrad/PyTorch "
              f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
