"""python -m higgs_bench [-m] key=value ...: build, benchmark and compare Higgs Audio v2 engine variants.

Exit codes: 0 every variant ok; 1 every variant failed (a single failed run included); 2 bad arguments (a
setting Hydra or the schema refuses, an output folder that cannot be used, or every variant refused for
its settings); 3 a sweep with some variants ok and some not; 130 interrupted.
"""

import hashlib
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from higgs_bench.bench import callbacks
from higgs_bench.bench.build import variant_name
from higgs_bench.bench.config import register
from higgs_bench.bench.runner import run

VARIANT_KEYS = ("engine.", "backend.")


def paths_tag(*paths) -> str:
    """A short hash of model.path and model.codec_path for the job folder name (the paths themselves would
    nest folders), so that a sweep over checkpoints gives one folder per checkpoint."""
    if all(p is None for p in paths):
        return ""
    return ",paths=" + hashlib.sha256(repr(paths).encode()).hexdigest()[:8]


register()
OmegaConf.register_new_resolver("paths_tag", paths_tag, replace=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg) -> None:
    hydra_cfg = HydraConfig.get()
    # engine and backend settings define a variant too, so they join its name in the comparison table
    extra = [o for o in hydra_cfg.overrides.task if o.lstrip("+~").startswith(VARIANT_KEYS)]
    run(cfg, Path(hydra_cfg.runtime.output_dir), label=" ".join([variant_name(cfg), *extra]))


def exit_code(statuses: list[str] | None) -> int:
    if statuses is None:  # no job ran (--cfg, --help)
        return 0
    if statuses and all(s == "ok" for s in statuses):
        return 0
    if statuses and all(s == "refused" for s in statuses):
        return 2
    return 3 if "ok" in statuses else 1


def cli() -> int:
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: the job that was running is marked 'interrupted'; finish the sweep with resume=true",
              file=sys.stderr)
        return 130
    except SystemExit as done:
        if done.code not in (0, None) and callbacks.outcome is None:
            return 2  # Hydra refused the command line or the config before any job ran
        raise
    return exit_code(callbacks.outcome)


if __name__ == "__main__":
    sys.exit(cli())
