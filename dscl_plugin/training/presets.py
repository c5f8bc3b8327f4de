"""The shipped presets: YAML configs inside the package (``dscl_plugin/configs/``), found
by name (``dscl_digits_lt``) from any folder, also as a ``base:``."""

import difflib
from pathlib import Path

from dscl_plugin.errors import ConfigError
from dscl_plugin.files import PathLike

PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"
SUFFIX = ".yaml"


def preset_names() -> list[str]:
    """The names of the shipped presets, sorted."""
    return sorted(path.stem for path in PRESETS_DIR.glob(f"*{SUFFIX}"))


def preset_description(name: str) -> str:
    """The first comment line of preset ``name`` (without ``#``)."""
    for line in (PRESETS_DIR / f"{name}{SUFFIX}").read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def find_config(name: PathLike, folder: Path | None = None) -> Path:
    """The YAML file ``name`` means: a path (relative to ``folder`` when given, e.g. the
    file whose ``base:`` it is), else a shipped preset of that name (``dscl_digits_lt`` or
    ``dscl_digits_lt.yaml``).

    Raises:
        ConfigError: neither exists; the message names the closest preset or file.
    """
    path = Path(name)
    candidate = path if folder is None else folder / path
    if candidate.is_file():
        return candidate
    preset = PRESETS_DIR / f"{path.name.removesuffix(SUFFIX)}{SUFFIX}"
    if len(path.parts) == 1 and preset.is_file():
        return preset
    close = difflib.get_close_matches(path.name.removesuffix(SUFFIX), preset_names(), n=1)
    hint = f" Did you mean the preset '{close[0]}'?" if close else ""
    raise ConfigError(
        f"Config file not found: '{candidate}', and no preset of that name.{hint} "
        "(dscl-train --list-configs lists the presets)"
    )
