"""Does Inductor tune a kernel again whose tuned config its cache holds, when the compile workers are up?
(engine.WARM_START_INDUCTOR: a start from artefacts compiles without them.)

    python benchmarks/retune_in_workers_gpu.py OUT.json

Fresh processes over one Inductor cache, each compiling one row-sum reduction with the engine's options for tuned
reductions (backend.TUNED_REDUCTIONS, less the compile_threads=1 they now carry themselves): cold (tunes it), then
twice warm with the compile workers started and ready before the compile, then twice warm with compile_threads=1.
Each reports how many kernels coordinate descent tuned; the cached config arrives from a worker pickled, and a
Triton config that crossed a pickle has lost Inductor's found_by_coordesc mark.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

RUNS = ("cold", "workers", "workers", "in-process", "in-process")


def child(run: str) -> None:
    import torch
    from torch._inductor.async_compile import AsyncCompile

    from higgs_bench.backends.pytorch.backend import IN_PROCESS_COMPILE, TUNED_REDUCTIONS
    from higgs_bench.backends.pytorch.engine import WARM_START_INDUCTOR, kernel_tunings, start_compile_workers

    # the options without their own IN_PROCESS_COMPILE, so that the workers runs use the workers
    tuned = {option: value for option, value in TUNED_REDUCTIONS.items() if option not in IN_PROCESS_COMPILE}
    for option, value in (tuned | (WARM_START_INDUCTOR if run == "in-process" else {})).items():
        setattr(torch._inductor.config, option, value)
    if run == "workers":
        start_compile_workers()
    row_sums = torch.compile(lambda x, w: (x * w).sum(-1).relu(), dynamic=False)
    x = torch.randn(1, 3072, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(8192, 3072, device="cuda", dtype=torch.bfloat16)
    row_sums(x, w)
    torch.cuda.synchronize()
    print(json.dumps({"run": run, "workers_used": AsyncCompile.use_process_pool(),
                      "kernels_tuned": kernel_tunings()}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    results = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        for run in RUNS:
            done = subprocess.run([sys.executable, __file__, args.out, "--child", run], capture_output=True,
                                  text=True, env=env)
            result = json.loads(done.stdout.splitlines()[-1]) if done.returncode == 0 else \
                {"run": run, "error": done.stderr[-2000:]}
            print(result, flush=True)
            results.append(result)
    with open(args.out, "w") as out:
        json.dump(results, out, indent=1)


if __name__ == "__main__":
    main()
