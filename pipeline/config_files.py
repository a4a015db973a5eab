"""`--config FILE` for the commands whose options build a config dataclass (preprocess, fit, study): a YAML or
JSON file of option values, read into click's default_map (click's pattern for config files), so options on the
command line override the file and the file overrides the defaults. cli.py only attaches it."""
from __future__ import annotations

import click


def config_option(config_class, empty=None, before=None):
    """`--config FILE` for a command whose options build `config_class` ("module:Class", imported only when a
    file is given). The file's values become the command's click default_map (click's pattern for config
    files): options on the command line override the file, the file overrides the defaults. Keys are option
    names (dashes or underscores) or the config's field names, so a run's own record replays it: fit's
    config.json, or the {"config": {...}} of study.json and a shard folder's manifest.json. `empty`: {param:
    value} for a recorded empty list that the command spells otherwise (study's variants: none). `before`:
    "module:NAME" of {field: value before the field existed}; a file holding every other field of the config
    is a run's record from then, and those fields replay at their old values (as its checkpoint loads)."""
    def load(ctx, param, path):
        if path is None or ctx.resilient_parsing:
            return
        values = _read_config_file(path)
        ctx.default_map = {**(ctx.default_map or {}),
                           **_config_defaults(ctx.command, values, config_class, empty or {}, before, path)}
    return click.option("--config", type=click.Path(exists=True, dir_okay=False), is_eager=True,
                        expose_value=False, callback=load,
                        help="YAML or JSON file of option values (a run's config.json replays the run); "
                             "options given here override it.")


def _read_config_file(path) -> dict:
    import json
    try:
        text = open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"{path}: cannot be read as a text file: {e}", param_hint="--config") from None
    if path.lower().endswith(".json"):
        try:
            values = json.loads(text)
        except ValueError as e:                   # json.JSONDecodeError
            raise click.BadParameter(f"{path}: not valid JSON: {e}", param_hint="--config") from None
    else:                                         # YAML, which also reads JSON
        try:
            import yaml
        except ImportError:
            raise click.BadParameter(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or give a .json "
                                     f"file", param_hint="--config") from None
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise click.BadParameter(f"{path}: not valid YAML: {' '.join(str(e).split())}",
                                     param_hint="--config") from None
    if isinstance(values, dict) and isinstance(values.get("config"), dict):
        values = values["config"]                 # study.json, manifest.json: the config beside the results
    if not isinstance(values, dict):
        raise click.BadParameter(f"{path}: expected a mapping of option names to values, got "
                                 f"{type(values).__name__}", param_hint="--config")
    return values


def _config_defaults(command, values, config_class, empty, before, path) -> dict:
    """File keys -> {param name: value} for click's default_map; unknown keys are one error naming them all."""
    import dataclasses
    import importlib
    params = {p.name: p for p in command.params if p.name and p.name != "config" and p.expose_value}
    names = {}
    for p in params.values():
        for spelling in (p.name, *(o.lstrip("-") for o in p.opts if o.startswith("--"))):
            names[spelling.replace("-", "_")] = p.name
    module, cls = config_class.split(":")
    fields = {f.name: f for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}
    if before:
        module, name = before.split(":")
        old_values = getattr(importlib.import_module(module), name)
        missing = set(fields) - set(values)
        if missing and missing <= set(old_values):
            values = {**{k: old_values[k] for k in missing}, **values}
    defaults, unknown, fixed = {}, [], []
    for key, value in values.items():
        name = names.get(str(key).replace("-", "_"))
        if name is None:
            field = fields.get(str(key))
            if field is None:
                unknown.append(str(key))
            elif not _is_field_default(field, value):   # recorded, not settable here: only its default replays
                fixed.append(f"{key}={value!r}")
            continue
        param = params[name]
        if param.default is None and value in ("", None, [], ()):
            continue                              # a recorded "not given" (no --root, no --train): the default
        if isinstance(value, (list, tuple)) and not param.multiple and param.nargs == 1:
            value = ",".join(map(str, value))     # a list recorded from a comma-separated option (--losses)
        if param.multiple and value in ([], ()) and name in empty:
            value = empty[name]
        defaults[name] = value
    if unknown:
        known = sorted({*names, *fields})
        raise click.BadParameter(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}",
                                 param_hint="--config")
    if fixed:
        raise click.BadParameter(f"{path}: {', '.join(fixed)}: not an option of `{command.name}` (only its "
                                 f"default can be replayed)", param_hint="--config")
    return defaults


def _is_field_default(field, value) -> bool:
    import dataclasses
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    return value == default or (isinstance(default, tuple) and isinstance(value, list) and tuple(value) == default)
