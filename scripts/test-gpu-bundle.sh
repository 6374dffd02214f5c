#!/usr/bin/env bash
# Checks the GPU bundle on this machine: it builds within its size limit,
# and its run.sh writes a complete, valid JSON report whose verdict agrees
# with its exit status. Without a GPU (CI) the run must fail, and the JSON
# must say that the GPU is missing; with one it reports what it measured.
#
#   scripts/test-gpu-bundle.sh        # builds .gpu-bundle/ first
#   scripts/test-gpu-bundle.sh --no-build
#
# Needs what scripts/gpu-bundle.sh needs, and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle="${GPU_BUNDLE_DIR:-.gpu-bundle}"

if [[ "${1:-}" != --no-build ]]; then
    scripts/gpu-bundle.sh
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

set +e
"$bundle/run.sh" "$out" >"$out/run.log" 2>&1
rc=$?
set -e
echo "test-gpu-bundle: run.sh exited $rc" >&2

python3 - "$out/gpu-run.json" "$rc" "$bundle" <<'PY'
import json, subprocess, sys

path, rc, bundle = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path) as f:
    run = json.load(f)  # fails on invalid JSON

def fail(msg):
    sys.exit(f"test-gpu-bundle: {msg}\n{json.dumps(run, indent=1)[:4000]}")

for key in ("schema", "verdict", "summary", "reasons", "bundle", "nvidia_smi", "machine",
            "cublas", "tests", "bench", "bench_errors"):
    if key not in run:
        fail(f"the report lacks `{key}`")
if (rc == 0) != (run["verdict"] == "pass"):
    fail(f"exit status {rc} but verdict {run['verdict']}")
if run["verdict"] == "fail" and not run["reasons"]:
    fail("a failed run gives no reason")

# Every parity test and every GPU unit test of the bundle ran and is reported.
def listed(binary, *filter):
    out = subprocess.run([f"{bundle}/tests/{binary}", "--list", "--format", "terse", *filter],
                         capture_output=True, text=True, check=True).stdout
    return {l[: -len(": test")] for l in out.splitlines() if l.endswith(": test")}
for binary, filt in (("cuda_parity", ()), ("half_round_first", ()), ("advgrad-lib", ("backend::cuda",))):
    want = listed(binary, *filt)
    got = {t["name"] for t in run["tests"] if t["binary"] == binary}
    if not want or want != got:
        fail(f"{binary}: tests listed {sorted(want)}, reported {sorted(got)}")
for t in run["tests"]:
    if t["status"] not in ("pass", "fail") or (t["status"] == "fail" and not t["message"]):
        fail(f"test entry without a status or message: {t}")

# Every op the binary offers was run on the GPU: a row or an error each.
ops = subprocess.run([f"{bundle}/advgrad", "bench", "--list-ops"], capture_output=True,
                     text=True, check=True).stdout.split()
names = {"pgd": "pgd20"}
for op in ops:
    if op == "machine":
        continue
    rows = [r for r in run["bench"] if r["op"] == names.get(op, op) and r["device"].startswith("cuda")]
    errors = [e for e in run["bench_errors"] if e["op"] == op and e["device"] == "cuda"]
    if not rows and not errors:
        fail(f"bench op {op} on the GPU: neither a row nor an error")
    for e in errors:
        if "invalid value" in e["error"] or "unexpected argument" in e["error"]:
            fail(f"run.sh ran a bench command the binary rejects: {e}")

machine = run["machine"]
if not isinstance(machine, dict) or machine.get("op") != "machine":
    fail("no machine row from advgrad bench --op machine")
if "gpu" in machine:
    print(f"test-gpu-bundle: GPU present ({machine['gpu']['name']}); verdict {run['verdict']}")
    sys.exit(0)

# No GPU here: the run must fail, and say why.
why = machine.get("gpu_unavailable", "")
if run["verdict"] != "fail":
    fail("no GPU, yet the verdict is pass")
if not any(s in why for s in ("no CUDA driver", "no GPU", "without the `cuda` feature")):
    fail(f"the machine row does not say why the GPU is missing: {why!r}")
parity = [t for t in run["tests"] if t["binary"] == "cuda_parity" and t["status"] == "fail"]
if not parity or not all("ADVGRAD_REQUIRE_GPU is set" in t["message"] for t in parity):
    fail("without a GPU the parity tests must fail, naming ADVGRAD_REQUIRE_GPU")
if "ADVGRAD_REQUIRE_GPU is set" not in run["summary"]:
    fail(f"the summary does not say why: {run['summary']}")
print(f"test-gpu-bundle: no GPU here; run.sh failed as it must: {why}")
PY
