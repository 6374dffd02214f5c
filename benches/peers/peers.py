#!/usr/bin/env python3
"""Peer timings for `benches/peers/run.sh`: the same protocol in JAX, PyTorch,
NumPy and advgrad, on the CPU, on the same threads.

    peers.py run --framework jax|torch|torch-compile|torch-bf16|numpy   # one JSON line per op
    peers.py run --framework advgrad|advgrad-bf16 --bin target/release/advgrad
    peers.py report raw.jsonl --json results.json             # the table

The protocol (the same everywhere; `src/cli/bench.rs` is advgrad's side):
MLP 784-256-256-10 ReLU, PyTorch's default init U(+-1/sqrt(fan_in)) for W and
b, SGD lr 0.1, batch 128, mean cross-entropy, pixels / 255 as float32, data
read from the Fashion-MNIST IDX .gz files.

- epoch: one epoch of 469 steps over the 60k shuffled training set; the clock
  runs over the training steps (batch gather included, shuffle excluded);
  median of 3 epochs after one warm-up (compile) epoch.
- train_step: one step on a fixed batch, median of 50 after 10 warm-up steps;
  GFLOP/s from 155.06 MFLOP per step.
- fgsm: eps 0.1 over the 10k test set in batches of 1000 (input gradient of
  the mean loss, x' = clip(x + eps sign(g), 0, 1)); total seconds, median of 3.
- pgd20: L-inf PGD, eps 0.1, alpha 0.01, 20 steps, no random start, projection
  onto the eps-ball intersected with [0, 1]; batches of 1000; total seconds,
  median of 3. Attacks use the freshly initialised model.

The bf16 variants run the same protocol in mixed precision: `torch-bf16`
wraps every forward pass in `torch.autocast("cpu", dtype=torch.bfloat16)`
(matrix products in bf16, f32 master weights and optimiser), `advgrad-bf16`
passes `--precision bf16` (the same rule).
"""

import argparse
import gzip
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time

ARCH = (784, 256, 256, 10)
BATCH = 128
LR = 0.1
ATTACK_BATCH = 1000
EPS = 0.1
PGD_STEPS = 20
ALPHA = 0.01
EPOCH_REPEATS = 3
ATTACK_REPEATS = 3
STEP_WARMUP = 10
STEP_REPEATS = 50


def train_step_flops():
    """FLOPs of one training step (forward 2·B·Σ in·out, backward twice that,
    less the input gradient of the first layer): 155.06 MFLOP."""
    macs = sum(i * o for i, o in zip(ARCH[:-1], ARCH[1:]))
    return 6.0 * BATCH * macs - 2.0 * BATCH * ARCH[0] * ARCH[1]


FLOPS = train_step_flops()


# --------------------------------------------------------------------- data


def read_idx(path):
    import numpy as np

    with gzip.open(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(data_dir, split):
    """(x float32 [N, 784] in [0, 1], y int64 [N])."""
    import numpy as np

    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    x = (x.reshape(len(x), -1).astype(np.float32) / np.float32(255.0)).copy()
    return x, y.astype(np.int64)


def init_params(seed=0, widths=ARCH):
    """[(W [out, in], b [out])] with PyTorch's nn.Linear default init."""
    import numpy as np

    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        bound = 1.0 / np.sqrt(fan_in)
        w = rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32)
        b = rng.uniform(-bound, bound, (fan_out,)).astype(np.float32)
        params.append((w, b))
    return params


# ---------------------------------------------------------------- frameworks
#
# Each framework object has:
#   step(x_np, y_np)        one SGD step on numpy arrays (conversion included)
#   step_prepared(x, y)     one SGD step on already-converted arrays
#   prepare(x_np, y_np)     numpy -> framework arrays
#   fgsm(x, y), pgd(x, y)   adversarial examples for one prepared batch
#   sync(result)            wait for the result (JAX dispatches asynchronously)
#   versions()              dict of versions and thread settings


class Jax:
    name = "jax"

    def __init__(self, threads):
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_platforms", "cpu")
        self.jax, self.jnp = jax, jnp
        self.threads = threads
        self.params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in init_params()]
        self.attack_params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in init_params()]

        def forward(params, x):
            h = x
            for i, (w, b) in enumerate(params):
                h = h @ w.T + b
                if i + 1 < len(params):
                    h = jax.nn.relu(h)
            return h

        def loss_fn(params, x, y):
            logp = jax.nn.log_softmax(forward(params, x))
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

        def step(params, x, y):
            grads = jax.grad(loss_fn)(params, x, y)
            return jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads)

        input_grad = jax.grad(loss_fn, argnums=1)

        def fgsm(params, x, y):
            g = input_grad(params, x, y)
            return jnp.clip(x + EPS * jnp.sign(g), 0.0, 1.0)

        def pgd(params, x0, y):
            lo = jnp.maximum(x0 - EPS, 0.0)
            hi = jnp.minimum(x0 + EPS, 1.0)

            def body(_, x):
                g = input_grad(params, x, y)
                return jnp.clip(x + ALPHA * jnp.sign(g), lo, hi)

            return jax.lax.fori_loop(0, PGD_STEPS, body, x0)

        self._step = jax.jit(step, donate_argnums=0)
        self._fgsm = jax.jit(fgsm)
        self._pgd = jax.jit(pgd)

    def prepare(self, x, y):
        return self.jax.device_put(x), self.jax.device_put(y.astype("int32"))

    def step(self, x, y):
        self.params = self._step(self.params, x, y.astype("int32"))

    def step_prepared(self, x, y):
        self.params = self._step(self.params, x, y)

    def fgsm(self, x, y):
        return self._fgsm(self.attack_params, x, y)

    def pgd(self, x, y):
        return self._pgd(self.attack_params, x, y)

    def sync(self, result=None):
        self.jax.block_until_ready(self.params if result is None else result)

    def versions(self):
        import jaxlib

        return {
            "jax": self.jax.__version__,
            "jaxlib": jaxlib.__version__,
            "jax_backend": self.jax.default_backend(),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        }


class Torch:
    name = "torch"

    def __init__(self, threads, compile_model=False, autocast=None):
        import contextlib

        import torch
        import torch.nn.functional as F

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        self.torch, self.F = torch, F
        self.threads = threads
        self.compiled = compile_model
        if compile_model:
            self.name = "torch-compile"
        # Mixed precision: the forward passes (and so their backward
        # products) under CPU autocast.
        self.autocast = (lambda: torch.autocast("cpu", dtype=autocast)) if autocast else contextlib.nullcontext
        if autocast is torch.bfloat16:
            self.name = "torch-bf16"
        self.model = self._mlp(requires_grad=True)
        self.attack_model = self._mlp(requires_grad=False)
        if compile_model:
            self.model_fn = torch.compile(self.model)
            self.attack_fn = torch.compile(self.attack_model)
        else:
            self.model_fn = self.model
            self.attack_fn = self.attack_model
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)

    def _mlp(self, requires_grad):
        torch = self.torch
        layers = []
        for i, (w, b) in enumerate(init_params()):
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if i + 1 < len(ARCH) - 1:
                layers.append(torch.nn.ReLU())
        model = torch.nn.Sequential(*layers)
        model.requires_grad_(requires_grad)
        return model

    def prepare(self, x, y):
        return self.torch.from_numpy(x), self.torch.from_numpy(y)

    def step(self, x, y):
        self.step_prepared(self.torch.from_numpy(x), self.torch.from_numpy(y))

    def step_prepared(self, x, y):
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.F.cross_entropy(self.model_fn(x), y)
        loss.backward()
        self.opt.step()

    def _input_grad(self, x, y):
        x = x.detach().requires_grad_(True)
        with self.autocast():
            loss = self.F.cross_entropy(self.attack_fn(x), y)
        (g,) = self.torch.autograd.grad(loss, x)
        return g

    def fgsm(self, x, y):
        g = self._input_grad(x, y)
        with self.torch.no_grad():
            return (x + EPS * g.sign()).clamp_(0.0, 1.0)

    def pgd(self, x0, y):
        torch = self.torch
        lo = (x0 - EPS).clamp_(min=0.0)
        hi = (x0 + EPS).clamp_(max=1.0)
        x = x0
        for _ in range(PGD_STEPS):
            g = self._input_grad(x, y)
            with torch.no_grad():
                x = torch.minimum(torch.maximum(x + ALPHA * g.sign(), lo), hi)
        return x

    def sync(self, result=None):
        pass

    def versions(self):
        torch = self.torch
        return {
            "torch": torch.__version__,
            "autocast": self.name == "torch-bf16",
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }


class Numpy:
    """Hand-written backprop on NumPy (OpenBLAS matmuls): a floor for
    'no framework at all'."""

    name = "numpy"

    def __init__(self, threads):
        import numpy as np

        self.np = np
        self.threads = threads
        self.params = [(w.copy(), b.copy()) for w, b in init_params()]
        self.attack_params = [(w.copy(), b.copy()) for w, b in init_params()]

    def _fwd_bwd(self, params, x, y, param_grads, input_grad):
        np = self.np
        (w1, b1), (w2, b2), (w3, b3) = params
        z1 = x @ w1.T
        z1 += b1
        h1 = np.maximum(z1, 0.0)
        z2 = h1 @ w2.T
        z2 += b2
        h2 = np.maximum(z2, 0.0)
        z3 = h2 @ w3.T
        z3 += b3
        z3 -= z3.max(axis=1, keepdims=True)
        p = np.exp(z3)
        p /= p.sum(axis=1, keepdims=True)
        n = len(y)
        p[np.arange(n), y] -= 1.0
        d3 = p * np.float32(1.0 / n)
        dz2 = d3 @ w3
        dz2 *= z2 > 0
        dz1 = dz2 @ w2
        dz1 *= z1 > 0
        grads = None
        if param_grads:
            grads = [
                (dz1.T @ x, dz1.sum(axis=0)),
                (dz2.T @ h1, dz2.sum(axis=0)),
                (d3.T @ h2, d3.sum(axis=0)),
            ]
        dx = dz1 @ w1 if input_grad else None
        return grads, dx

    def prepare(self, x, y):
        return x, y

    def step(self, x, y):
        grads, _ = self._fwd_bwd(self.params, x, y, True, False)
        lr = self.np.float32(LR)
        for (w, b), (gw, gb) in zip(self.params, grads):
            w -= lr * gw
            b -= lr * gb

    step_prepared = step

    def fgsm(self, x, y):
        np = self.np
        _, g = self._fwd_bwd(self.attack_params, x, y, False, True)
        return np.clip(x + np.float32(EPS) * np.sign(g), 0.0, 1.0)

    def pgd(self, x0, y):
        np = self.np
        lo = np.maximum(x0 - np.float32(EPS), 0.0)
        hi = np.minimum(x0 + np.float32(EPS), 1.0)
        x = x0
        for _ in range(PGD_STEPS):
            _, g = self._fwd_bwd(self.attack_params, x, y, False, True)
            x = np.clip(x + np.float32(ALPHA) * np.sign(g), lo, hi)
        return x

    def sync(self, result=None):
        pass

    def versions(self):
        np = self.np
        info = {"numpy": np.__version__}
        try:  # the BLAS numpy was built against
            cfg = np.show_config(mode="dicts")
            blas = cfg.get("Build Dependencies", {}).get("blas", {})
            info["blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
        except Exception:  # noqa: BLE001 - older numpy; the version is enough
            pass
        return info


# ------------------------------------------------------------------ protocol


def emit(record):
    print(json.dumps(record), flush=True)


def run_python_framework(fw, data_dir, ops, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    meta = {"python": platform.python_version(), "threads": fw.threads}
    meta.update(fw.versions())
    emit({"framework": fw.name, "op": "meta", **meta})

    if "epoch" in ops or "train_step" in ops:
        xtr, ytr = load_split(data_dir, "train")
    if "fgsm" in ops or "pgd" in ops:
        xte, yte = load_split(data_dir, "test")
        batches = [
            fw.prepare(xte[i : i + ATTACK_BATCH], yte[i : i + ATTACK_BATCH])
            for i in range(0, len(xte), ATTACK_BATCH)
        ]

    if "epoch" in ops:
        n = len(xtr)

        def epoch():
            perm = rng.permutation(n)
            fw.sync()
            start = time.perf_counter()
            for i in range(0, n, BATCH):
                idx = perm[i : i + BATCH]
                fw.step(xtr[idx], ytr[idx])
            fw.sync()
            return time.perf_counter() - start

        t0 = time.perf_counter()
        epoch()  # warm-up: compiles both batch shapes (128 and the last 96)
        warm = time.perf_counter() - t0
        times = [epoch() for _ in range(EPOCH_REPEATS)]
        emit({
            "framework": fw.name, "op": "epoch", "seconds": statistics.median(times),
            "steps": -(-n // BATCH), "warmup_seconds": warm, "all_seconds": times,
        })

    if "train_step" in ops:
        x, y = fw.prepare(xtr[:BATCH], ytr[:BATCH])
        for _ in range(STEP_WARMUP):
            fw.step_prepared(x, y)
        fw.sync()
        times = []
        for _ in range(STEP_REPEATS):
            start = time.perf_counter()
            fw.step_prepared(x, y)
            fw.sync()
            times.append(time.perf_counter() - start)
        sec = statistics.median(times)
        emit({
            "framework": fw.name, "op": "train_step", "seconds": sec,
            "mflop": FLOPS / 1e6, "gflops": FLOPS / sec / 1e9,
        })

    for name, op, attack in (("fgsm", "fgsm", fw.fgsm), ("pgd", "pgd20", fw.pgd)):
        if name not in ops:
            continue

        def run_attack():
            start = time.perf_counter()
            out = [attack(x, y) for x, y in batches]
            fw.sync(out)
            return time.perf_counter() - start

        run_attack()  # warm-up / compile
        times = [run_attack() for _ in range(ATTACK_REPEATS)]
        emit({
            "framework": fw.name, "op": op, "seconds": statistics.median(times),
            "examples": sum(len(y) for _, y in batches), "eps": EPS,
            "all_seconds": times,
        })


def run_advgrad(binary, data_dir, ops, precision="f32"):
    name = "advgrad" if precision == "f32" else f"advgrad-{precision}"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(binary))))
    git = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"],
                         capture_output=True, text=True)
    emit({
        "framework": name, "op": "meta", "precision": precision,
        "advgrad": version.stdout.strip() or "?",
        "git": git.stdout.strip() or "?",
        "threads": int(os.environ.get("RAYON_NUM_THREADS", "0")) or os.cpu_count(),
    })
    for op in ("epoch", "train_step", "fgsm", "pgd"):
        if op not in ops:
            continue
        repeat = "5" if op == "train_step" else str(EPOCH_REPEATS)
        cmd = [binary, "bench", "--op", op, "--device", "cpu", "--json",
               "--repeat", repeat, "--data", data_dir, "--precision", precision]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            emit({"framework": name, "op": op, "error": proc.stderr.strip()[-2000:]})
            continue
        for line in proc.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                rec = json.loads(line)
                rec["framework"] = name
                emit(rec)


# -------------------------------------------------------------------- report

FRAMEWORK_ORDER = ["advgrad", "advgrad-bf16", "jax", "torch", "torch-compile", "torch-bf16", "numpy"]
OPS = [("epoch", "s", 1.0), ("train_step", "ms", 1e3), ("fgsm", "s", 1.0), ("pgd20", "s", 1.0)]


def report(raw_path, json_path, machine):
    records = []
    with open(raw_path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                records.append(json.loads(line))
    frameworks = sorted(
        {r["framework"] for r in records},
        key=lambda n: (FRAMEWORK_ORDER.index(n) if n in FRAMEWORK_ORDER else 99, n),
    )
    meta = {r["framework"]: {k: v for k, v in r.items() if k not in ("framework", "op")}
            for r in records if r.get("op") == "meta"}
    results = {}
    errors = []
    for r in records:
        if r.get("op") == "meta":
            continue
        if "error" in r:
            errors.append(f"{r['framework']} {r.get('op')}: {r['error']}")
            continue
        results.setdefault(r["op"], {})[r["framework"]] = r

    peers = [f for f in frameworks if f != "advgrad"]
    head = ["op", "unit"] + frameworks + [f"advgrad/{p}" for p in peers]
    rows = []
    for op, unit, scale in OPS:
        if op not in results:
            continue
        row = [op, unit]
        for f in frameworks:
            r = results[op].get(f)
            row.append(f"{r['seconds'] * scale:.3f}" if r else "-")
        ours = results[op].get("advgrad")
        for p in peers:
            r = results[op].get(p)
            row.append(f"{ours['seconds'] / r['seconds']:.2f}x" if ours and r else "-")
        rows.append(row)
        if op == "train_step":
            row = ["train_step", "GFLOP/s"]
            for f in frameworks:
                r = results[op].get(f)
                row.append(f"{FLOPS / r['seconds'] / 1e9:.1f}" if r else "-")
            row += [""] * len(peers)
            rows.append(row)

    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w)
                       for i, (c, w) in enumerate(zip(cells, widths)))
             for cells in [head] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    table = "\n".join(lines)

    print(f"date: {machine.get('date', '?')}")
    print(f"machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
          f"threads {machine.get('threads', '?')}, load average "
          f"{machine.get('load_before', '?')} before / {machine.get('load_after', '?')} after")
    for f in frameworks:
        m = meta.get(f, {})
        print(f"{f}: " + ", ".join(f"{k}={v}" for k, v in m.items()))
    print()
    print(table)
    print("\n(times: lower is better; ratios are advgrad time / peer time, below 1 means advgrad is faster)")
    for e in errors:
        print(f"ERROR {e}")

    if json_path:
        doc = {
            "machine": machine,
            "protocol": {
                "arch": "-".join(map(str, ARCH)), "batch": BATCH, "lr": LR,
                "attack_batch": ATTACK_BATCH, "eps": EPS, "pgd_steps": PGD_STEPS,
                "alpha": ALPHA, "train_step_mflop": FLOPS / 1e6,
            },
            "versions": meta,
            "results": results,
            "ratios": {
                op: {p: results[op]["advgrad"]["seconds"] / results[op][p]["seconds"]
                     for p in peers if p in results[op] and "advgrad" in results[op]}
                for op in results
            },
            "errors": errors,
            "table": table,
        }
        with open(json_path, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    return 1 if errors else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="time one framework, one JSON line per op")
    r.add_argument("--framework", required=True,
                   choices=["jax", "torch", "torch-compile", "torch-bf16", "numpy", "advgrad", "advgrad-bf16"])
    r.add_argument("--data", default=os.environ.get("ADVGRAD_DATA", "/usr/share/datasets/fashion-mnist"))
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--ops", default="epoch,train_step,fgsm,pgd")
    r.add_argument("--bin", help="the advgrad binary (for --framework advgrad)")
    r.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("report", help="print the table from the JSON lines of `run`")
    p.add_argument("raw")
    p.add_argument("--json", help="write results here")
    p.add_argument("--machine", default="{}", help="JSON object describing the machine")
    args = ap.parse_args()

    if args.cmd == "report":
        return report(args.raw, args.json, json.loads(args.machine))

    ops = set(args.ops.split(","))
    if args.framework in ("advgrad", "advgrad-bf16"):
        if not args.bin:
            ap.error(f"--framework {args.framework} needs --bin")
        run_advgrad(args.bin, args.data, ops, "bf16" if args.framework == "advgrad-bf16" else "f32")
        return 0
    fw = {
        "jax": lambda: Jax(args.threads),
        "torch": lambda: Torch(args.threads),
        "torch-compile": lambda: Torch(args.threads, compile_model=True),
        "torch-bf16": lambda: Torch(args.threads, autocast=__import__("torch").bfloat16),
        "numpy": lambda: Numpy(args.threads),
    }[args.framework]()
    run_python_framework(fw, args.data, ops, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
