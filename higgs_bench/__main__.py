"""python -m higgs_bench [-m] key=value ...: build, benchmark and compare Higgs Audio v2 engine variants."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from higgs_bench.bench.build import variant_name
from higgs_bench.bench.config import register
from higgs_bench.bench.runner import run

VARIANT_KEYS = ("engine.", "backend.")

register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg) -> None:
    hydra_cfg = HydraConfig.get()
    # engine and backend settings define a variant too, so they join its name in the comparison table
    extra = [o for o in hydra_cfg.overrides.task if o.lstrip("+~").startswith(VARIANT_KEYS)]
    run(cfg, Path(hydra_cfg.runtime.output_dir), label=" ".join([variant_name(cfg), *extra]))


if __name__ == "__main__":
    main()
