#!/usr/bin/env python3
"""The lean protocol for `benches/peers/lean.sh`: one epoch of SGD on an MLP
`784-H-H-10` with everything but the training steps off the clock, in JAX and
in advgrad, at the configurations (H, batch) the f32-at-scale issue names.

    lean.py jax --arch 784-256-256-10 --batch 128 --repeat 3   # one JSON line
    lean.py jax --platform cuda --arch ... --batch ...         # JAX on a GPU
    lean.py advgrad --bin target/release/advgrad --arch ... --batch ... --repeat 3
    lean.py report raw.jsonl --json lean-results.json --machine '{...}'

The protocol (advgrad's side is `advgrad bench --op epoch --synthetic`):
- data: 60000 x 784 synthetic pixels, x[i, j] = (((i*784 + j) * 2654435761)
  mod 2^32 >> 24) / 255 as float32, label i mod 10 (the same arrays on both
  sides); cut into the 60000 // batch full batches, already arrays on the
  device before the clock starts (no shuffle, no gather, no partial batch);
- model: ReLU MLP, PyTorch's default init U(+-1/sqrt(fan_in)), mean
  cross-entropy, SGD lr 0.1;
- JAX: one jit-compiled step (parameters donated) called once per batch from
  Python; the clock stops when the last parameters are ready;
- timing: one warm-up epoch (compilation), then the median of `--repeat`
  epochs.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from peers import init_params

ROWS = 60000
CLASSES = 10
LR = 0.1
# (H, batch) of the table.
CONFIGS = [(256, 128), (1024, 128), (1024, 512), (2048, 256)]


def emit(record):
    print(json.dumps(record), flush=True)


def synthetic(features):
    """(x float32 [ROWS, features], y int32 [ROWS]): the formula above."""
    import numpy as np

    index = np.arange(ROWS * features, dtype=np.uint64)
    hashed = (index * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    x = ((hashed >> np.uint64(24)).astype(np.float32) / np.float32(255.0)).reshape(ROWS, features)
    y = (np.arange(ROWS) % CLASSES).astype(np.int32)
    return x, y


def run_jax(arch, batch, repeat, platform_name="cpu"):
    import jax
    import jax.numpy as jnp
    import jaxlib

    jax.config.update("jax_platforms", platform_name)
    if platform_name != "cpu":
        # f32 products in f32, as advgrad's (XLA's default on a GPU is TF32).
        jax.config.update("jax_default_matmul_precision", "highest")
    widths = [int(w) for w in arch.split("-")]

    def loss_fn(params, x, y):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w.T + b
            if i + 1 < len(params):
                h = jax.nn.relu(h)
        logp = jax.nn.log_softmax(h)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def step(params, x, y):
        grads = jax.grad(loss_fn)(params, x, y)
        return jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads)

    step = jax.jit(step, donate_argnums=0)
    x, y = synthetic(widths[0])
    steps = ROWS // batch
    xs = [jax.device_put(x[i * batch : (i + 1) * batch]) for i in range(steps)]
    ys = [jax.device_put(y[i * batch : (i + 1) * batch]) for i in range(steps)]
    jax.block_until_ready((xs, ys))

    def epoch():
        params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in init_params(widths=widths)]
        jax.block_until_ready(params)
        start = time.perf_counter()
        for xb, yb in zip(xs, ys):
            params = step(params, xb, yb)
        jax.block_until_ready(params)
        return time.perf_counter() - start

    warm = epoch()
    times = [epoch() for _ in range(repeat)]
    emit({
        "framework": "jax", "arch": arch, "batch": batch, "steps": steps,
        "platform": platform_name, "device": str(jax.devices()[0]),
        "seconds": statistics.median(times), "all_seconds": times, "warmup_seconds": warm,
        "jax": jax.__version__, "jaxlib": jaxlib.__version__,
        "python": platform.python_version(), "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
    })


def run_advgrad(binary, arch, batch, repeat):
    cmd = [binary, "bench", "--op", "epoch", "--synthetic", "--device", "cpu", "--json",
           "--arch", arch, "--batch", str(batch), "--repeat", str(repeat)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        emit({"framework": "advgrad", "arch": arch, "batch": batch,
              "error": proc.stderr.strip()[-2000:]})
        return
    for line in proc.stdout.splitlines():
        rec = json.loads(line) if line.startswith("{") else None
        if rec and rec.get("op") == "epoch":
            rec.update(framework="advgrad", arch=arch, batch=batch)
            emit(rec)


def report(raw_path, json_path, machine):
    """The ratio table: per configuration, the median over every epoch each
    framework ran (all rounds), the spread (min-max), and advgrad / JAX three
    ways: the ratio of those medians; the ratio of each round's medians (the
    two sides ran back to back there, so a noisy neighbour that comes and
    goes between rounds cancels) and their median; and the ratio of the
    fastest epochs (each side's best case on this machine)."""
    records = [json.loads(l) for l in open(raw_path) if l.startswith("{")]
    errors = [f"{r['framework']} {r['arch']} batch {r['batch']}: {r['error']}"
              for r in records if "error" in r]
    rows, results = [], []
    for h, batch in CONFIGS:
        arch = f"784-{h}-{h}-10"
        rounds = {}
        for r in records:
            if r.get("arch") == arch and r.get("batch") == batch and "error" not in r:
                rounds.setdefault(r["framework"], []).append(r["all_seconds"])
        if "jax" not in rounds and "advgrad" not in rounds:
            continue
        times = {f: [t for rnd in rs for t in rnd] for f, rs in rounds.items()}
        med = {f: statistics.median(t) for f, t in times.items()}
        both = len(med) == 2
        ratio = med["advgrad"] / med["jax"] if both else None
        round_ratios = ([statistics.median(a) / statistics.median(j)
                         for a, j in zip(rounds["advgrad"], rounds["jax"])] if both else [])
        best_ratio = min(times["advgrad"]) / min(times["jax"]) if both else None
        cell = lambda f: (f"{med[f]:.3f} s ({min(times[f]):.3f}-{max(times[f]):.3f}, n={len(times[f])})"
                          if f in med else "-")
        per_round = (f"{statistics.median(round_ratios):.2f}x ("
                     + " ".join(f"{x:.2f}" for x in round_ratios) + ")") if round_ratios else "-"
        rows.append([f"{h}, {batch}", cell("jax"), cell("advgrad"),
                     f"{ratio:.2f}x" if ratio else "-", per_round,
                     f"{best_ratio:.2f}x" if best_ratio else "-"])
        results.append({"h": h, "batch": batch, "arch": arch, "seconds": times,
                        "median": med, "ratio": ratio, "round_ratios": round_ratios,
                        "best_ratio": best_ratio})
    head = ["H, batch", "JAX (min-max)", "advgrad (min-max)", "advgrad/JAX",
            "per round: median (each)", "fastest/fastest"]
    widths = [max(len(c) for c in col) for col in zip(head, *rows)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in [head] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    table = "\n".join(lines)
    print(f"date: {machine.get('date', '?')}")
    print(f"machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
          f"threads {machine.get('threads', '?')}, load average "
          f"{machine.get('load_before', '?')} before / {machine.get('load_after', '?')} after")
    print("lean protocol: 784-H-H-10 ReLU, SGD lr 0.1, synthetic 60000x784, full batches "
          "pre-sliced on the device; one epoch, medians over all rounds\n")
    print(table)
    print("\n(ratio below 1: advgrad's epoch is shorter; the issue's target is <= 0.90x; "
          "advgrad/JAX is the ratio of the medians over all rounds)")
    for e in errors:
        print(f"ERROR {e}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"machine": machine, "results": results, "errors": errors,
                       "table": table}, f, indent=2)
            f.write("\n")
    return 1 if errors else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("jax", "advgrad"):
        r = sub.add_parser(name, help=f"time {name}'s epochs, one JSON line")
        r.add_argument("--arch", required=True)
        r.add_argument("--batch", type=int, required=True)
        r.add_argument("--repeat", type=int, default=3)
        if name == "advgrad":
            r.add_argument("--bin", required=True)
        else:
            r.add_argument("--platform", default="cpu", choices=["cpu", "cuda"],
                           help="where JAX runs (cuda: beside `advgrad bench --op epoch "
                                "--synthetic --device cuda`)")
    p = sub.add_parser("report", help="the ratio table from the JSON lines")
    p.add_argument("raw")
    p.add_argument("--json")
    p.add_argument("--machine", default="{}")
    args = ap.parse_args()
    if args.cmd == "report":
        return report(args.raw, args.json, json.loads(args.machine))
    if args.cmd == "jax":
        run_jax(args.arch, args.batch, args.repeat, args.platform)
    else:
        run_advgrad(args.bin, args.arch, args.batch, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
