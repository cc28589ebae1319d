"""Validate the workflow configuration with ``snakemake.utils.validate``, with one-line errors.

Snakemake validates the config and fills in the schema's defaults; only when it
refuses the config is the schema consulted again, to name the key at fault in
one line instead of Snakemake's multi-line report.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from melstore.errors import ConfigError


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Check ``config`` against the schema and fill in its defaults, in place.

    Parameters
    ----------
    config : dict
        The loaded ``config.yaml`` (with any ``--config`` overrides).
    schema_path : str or Path
        The JSON schema, as YAML (``workflow/schemas/config.schema.yaml``).

    Returns
    -------
    dict
        ``config`` itself, with defaults filled in.

    Raises
    ------
    ConfigError
        Naming the first offending key and what is allowed there.
    """
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, str(Path(schema_path).resolve()), set_default=True)
    except WorkflowError:
        schema = yaml.safe_load(Path(schema_path).read_text())
        validator = jsonschema.validators.validator_for(schema)(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(config))
        raise ConfigError(describe(error)) from None
    return config


def describe(error: jsonschema.ValidationError) -> str:
    """One line naming the key at fault and what the schema allows there."""
    key = ".".join(str(part) for part in error.absolute_path)
    where = f"config key '{key}'" if key else "config"
    schema = error.schema
    if error.validator == "additionalProperties":
        allowed = ", ".join(schema.get("properties", {})) or "none"
        unknown = ", ".join(sorted(set(error.instance) - set(schema.get("properties", {}))))
        return f"{where}: unknown key {unknown!r}; allowed keys: {allowed}"
    if error.validator == "enum":
        choices = ", ".join("null" if v is None else str(v) for v in schema["enum"])
        return f"{where}: {error.instance!r} is not allowed; choose one of: {choices}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "oneOf" and "description" in schema:
        return f"{where}: {error.instance!r} is not allowed; expected {schema['description']}"
    if key == "features" and error.validator == "type" and isinstance(error.instance, str):
        # snakemake --config features=seed gives a string; YAML's flow list syntax gives a list
        names = ",".join(error.instance.replace(",", " ").split())
        if names:
            return (
                f"{where}: {error.instance!r} is not a list; "
                f"on the command line write --config 'features=[{names}]'"
            )
    return f"{where}: {error.message}"
