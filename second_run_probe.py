import json, sys
from pathlib import Path
from tests.test_compiled_engine import bench
out = Path(sys.argv[1])
for precision in sys.argv[2].split(","):
    tmp = out.parent / f"probe-{precision}"
    tmp.mkdir(parents=True, exist_ok=True)
    _, cold = bench(tmp, "cold", "backend.device=cuda", f"precision={precision}")
    _, warm = bench(tmp, "warm", "backend.device=cuda", f"precision={precision}")
    keep = {"cold_own": cold["compile"]["own_kernels"], "cold_other": cold["compile"]["other_triton_kernels"],
            "warm_own": warm["start"]["own_kernels"], "warm_other": warm["start"]["other_triton_kernels"],
            "cold_cubins": [k["file"] for k in cold["triton_kernels"] if k["file"].endswith(".cubin")], "during": [cold["compiled_during_run"], warm["compiled_during_run"]]}
    print(precision, json.dumps(keep), flush=True)
