"""Runs a --target=cuda library over Inputs/fake_cuda_driver.c with each
driver entry point failing in turn (FAKE_CUDA_FAIL, from its Nth call on for
each N of --after), with host and with device-resident results, and checks
what must hold whatever fails: moe-run exits 0 or 1 (no crash, no hang), says
why when it exits 1 (one `moe-run: error:` line) and then writes no output
file, no copy touches memory outside an allocation, and nothing is leaked
unless the failing call is one that frees or makes the context current (the
runtime cannot free without them). Prints a summary and every violation;
exits 1 if there is one.

    fault_sweep.py MOE_RUN FAKE_DRIVER MODEL INPUT WORK_DIR [--after 0,1,3,10]
"""
import argparse
import os
import re
import subprocess
import sys

# Failing these leaves memory behind by necessity.
MAY_LEAK = {"cuMemFree_v2", "cuMemFreeAsync", "cuMemFreeHost", "cuCtxPushCurrent_v2"}


def entry_points(driver_source):
    return re.findall(r"X\((cu\w+)\)", open(driver_source).read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("moe_run")
    ap.add_argument("driver")
    ap.add_argument("model")
    ap.add_argument("input")
    ap.add_argument("work")
    ap.add_argument("--source", required=True, help="fake_cuda_driver.c")
    ap.add_argument("--after", default="0,1,3,10")
    args = ap.parse_args()
    out = os.path.join(args.work, "sweep-out.npy")
    runs = failures = 0
    problems = []
    for name in entry_points(args.source):
        for after in args.after.split(","):
            for extra in ([], ["--device-io"]):
                if os.path.exists(out):
                    os.remove(out)
                env = dict(os.environ, MOE_CUDA_DRIVER=args.driver, FAKE_CUDA_FAIL=name,
                           FAKE_CUDA_FAIL_AFTER=after)
                cmd = [args.moe_run, args.model, f"--input=@{args.input}", f"--output=@{out}",
                       "--benchmark=2", *extra]
                what = f"{name} from call {after}{' --device-io' if extra else ''}"
                try:
                    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
                except subprocess.TimeoutExpired:
                    problems.append(f"{what}: no exit in 60 s")
                    continue
                runs += 1
                text = p.stdout + p.stderr
                if p.returncode not in (0, 1):
                    problems.append(f"{what}: exit status {p.returncode}")
                    continue
                if p.returncode == 1:
                    failures += 1
                    if not re.search(r"^moe-run: error: ", text, re.M):
                        problems.append(f"{what}: exit 1 without an error line")
                    if os.path.exists(out):
                        problems.append(f"{what}: an output file after an error")
                m = re.search(r"fake cuda: bad copies (\d+)", text)
                if not m or m.group(1) != "0":
                    problems.append(f"{what}: bad copies {m.group(1) if m else '?'}")
                m = re.search(r"live device allocations (\d+), host (\d+)", text)
                if not m:
                    problems.append(f"{what}: no report from the driver")
                elif (m.group(1), m.group(2)) != ("0", "0") and name not in MAY_LEAK:
                    problems.append(f"{what}: leaked {m.group(1)} device and {m.group(2)} "
                                    "host allocations")
    print(f"fault sweep: {runs} runs, {failures} ended in an error, "
          f"{len(problems)} problems")
    for line in problems:
        print("  " + line)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
