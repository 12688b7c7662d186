# LS-AI track pipelines: one workflow, one column per track (see README.md).
#   snakemake --cores all                       every enabled track on built-in demo data
#   snakemake --profile profiles/leonardo --configfile config/leonardo.yaml   on Leonardo
import sys

from snakemake.utils import min_version

from workflow.common.config import ConfigError, validate_config
from workflow.common.errors import InputError
from workflow.common.experiments import enabled_datasets, enabled_experiments, run_settings
from workflow.common.groups import group_names, report_folder, with_groups
from workflow.common.variants import check_variants

min_version("9.0")


configfile: "config/config.yaml"

TRACKS = ("distance", "wsi", "sequence", "flip", "watermark", "nerf")  # every track's rules are included, enabled or not


try:
    validate_config(config, "config/schema/config.yaml")
    # --config group=alice[,bob]: each group's experiments (groups/<name>.yaml) as <name>/<exp>
    GROUPS = group_names(config["group"])
    GROUP_EXPERIMENTS = with_groups(config, GROUPS)
    REPORT = report_folder(GROUPS)  # results/report, or one per set of groups
    for track in TRACKS:
        enabled_datasets(track, config[track])
    for track in config["tracks"]:  # plug-in variants load now: a bad one stops every job
        experiments = enabled_experiments(config[track])
        check_variants(track, (run_settings(config[track], e) for e in experiments))
except (ConfigError, InputError) as err:
    sys.exit(f"error: {err}")


# The image of every job under `--sdm apptainer` (profiles/apptainer); otherwise unused.
container: config["container"]


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/distance.smk"
include: "rules/wsi.smk"
include: "rules/sequence.smk"
include: "rules/flip.smk"
include: "rules/watermark.smk"
include: "rules/nerf.smk"
include: "rules/report.smk"
include: "rules/capacity.smk"


rule all:
    """Every enabled track end to end, and the comparison report; with groups, their runs
    and the baselines' (shared), and their report."""
    input:
        [] if GROUPS else [getattr(rules, track).input for track in config["tracks"]],
        f"{REPORT}/summary.csv",
        f"{REPORT}/summary.md",
    default_target: True


onstart:
    # Not in dry-runs: a real run must not submit jobs without an account ...
    if SITE and SITE.get("unset_account"):
        sys.exit(f"error: {SITE['unset_account']}")
    # ... or send them to a cluster without a resource map (no partition, no GPU).
    if not workflow.local_exec and SITE is None:
        sys.exit(
            "error: --executor sends jobs to a cluster but no resource map is loaded: "
            "use its profile (--profile profiles/leonardo); with --config on the command "
            "line, also pass resource_maps=[profiles/leonardo/resources.yaml]"
        )
