"""Validate the workflow configuration against its JSON schema, with one-line errors."""

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
    # libyaml's loader where built: parsed at every workflow start
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    schema = yaml.load(Path(schema_path).read_text(), Loader=loader)  # noqa: S506 (a safe loader)
    validator = _with_defaults(jsonschema.Draft7Validator)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise ConfigError(describe(error))
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


def _with_defaults(validator_class):
    """Extend a validator so that it fills in ``default`` values, like Snakemake's."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})
