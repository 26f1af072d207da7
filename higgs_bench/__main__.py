"""python -m higgs_bench [-m] key=value ...: build, benchmark and compare Higgs Audio v2 engine variants."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from higgs_bench.bench.config import register
from higgs_bench.bench.build import variant_name
from higgs_bench.bench.runner import run

SWEPT_BY_NAME = {"backend", "precision", "resume", "build.force", "asr", "select"}

register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg) -> None:
    hydra_cfg = HydraConfig.get()
    # a sweep over anything but backend/precision gets those settings into the row's name
    extra = [o for o in hydra_cfg.overrides.task if not o.split("=")[0].lstrip("+~") in SWEPT_BY_NAME]
    run(cfg, Path(hydra_cfg.runtime.output_dir), label=" ".join([variant_name(cfg), *extra]))


if __name__ == "__main__":
    main()
