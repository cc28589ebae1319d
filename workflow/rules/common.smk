# Parse time: validate the config, list the dataset, assign shards.
import sys

from snakemake.logging import logger

from melstore.errors import MelstoreError
from melstore.pipeline.fingerprint import script_fingerprint
from melstore.pipeline.jobs import EXTRACT_THREADS
from melstore.store.format import library_versions
from melstore.pipeline.plan import Plan

try:
    plan = Plan.from_config(
        config,
        schema_path=os.path.join(
            workflow.basedir, "workflow/schemas/config.schema.yaml"
        ),
    )
except MelstoreError as err:
    sys.exit(f"melstore: {err}")  # one line, no traceback: the config is at fault

if plan.manifest.unlisted:
    logger.warning(
        f"melstore: {len(plan.manifest.unlisted)} audio file(s) under {plan.root} are not in "
        f"the metadata CSV and are left out, e.g. {plan.manifest.unlisted[0]}"
    )
# In every rule's params: upgrading a library that shapes the outputs reruns them.
VERSIONS = library_versions()


def script_code(script):
    """In a rule's params: a change in the package code its script runs reruns it."""
    return script_fingerprint(os.path.join(workflow.basedir, "scripts", script))


EXTRACT_CODE = script_code("extract.py")
RESULTS = f"results/{plan.dataset}"
LOGS = f"logs/{plan.dataset}"


wildcard_constraints:
    featureset="|".join(plan.feature_sets),
    shard=r"s[01]*",
    digest=r"[0-9a-f]+",


def store_path(featureset):
    return f"{RESULTS}/{featureset}.h5"


def shard_paths(wildcards):
    """The current shard files of a feature set, in shard order, named by what decides them."""
    return [
        f"{RESULTS}/shards/{wildcards.featureset}/"
        + plan.shard_file(wildcards.featureset, shard, EXTRACT_CODE, VERSIONS)
        for shard in plan.shards
    ]


def feature_params(wildcards):
    return plan.feature_sets[wildcards.featureset].to_dict()


def storage_params(wildcards):
    return plan.storage[wildcards.featureset].to_dict()


# All a store's index depends on besides its input files (shards, manifest file).
GATHER_PARAMS = {
    "features": feature_params,
    "storage": storage_params,
    "on_error": config["on_error"],
    "min_success": config["min_success"],
    "dataset": config["dataset"],
    "versions": VERSIONS,
    "code": script_code("gather.py"),
}


def report_file(name, *, caption, shows):
    """An output of the report rule, listed under its feature set in the HTML report."""
    return report(
        f"{RESULTS}/report/{{featureset}}/{name}",
        caption=f"../report/{caption}",
        category="{featureset}",
        labels={"result": shows},
    )
