"""advgrad and NumPy from identical initial weights and identical batch order.

NumPy draws PyTorch-style initial weights and one permutation per epoch,
writes them to a folder (init.safetensors in advgrad's model format and
order.u32, the epochs' permutations back to back), trains the 784-256-256-10
ReLU MLP with SGD lr 0.1, batch 128, and reports test accuracy clean, under
FGSM (eps 0.1) and PGD-20 (step 0.01, no random start). Then
`cargo run --release --example 07_same_weights -- DIR EPOCHS` does the same in
advgrad from those files. With the randomness shared, the two should agree to
a fraction of a point: what is left is float32 summation order.

    python3 benches/peers/same_weights.py --seed 0 --epochs 5
"""
import argparse
import os
import subprocess
import tempfile

import numpy as np
from safetensors.numpy import save_file

import numpy_accuracy as ref

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        params, orders = ref.draw(args.seed, args.epochs)
        save_file({f"{2 * (j // 2)}.{'weight' if j % 2 == 0 else 'bias'}": p for j, p in enumerate(params)},
                  os.path.join(tmp, "init.safetensors"),
                  metadata={"arch": "784-256-256-10", "activation": "relu"})
        np.concatenate(orders).astype("<u4").tofile(os.path.join(tmp, "order.u32"))
        clean, fgsm, pgd = ref.run(params, orders, "sgd")
        print(f"numpy   : clean {clean:.4f} fgsm {fgsm:.4f} pgd20 {pgd:.4f}", flush=True)
        subprocess.run(["cargo", "run", "--quiet", "--release", "--example", "07_same_weights", "--",
                        tmp, str(args.epochs)], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
