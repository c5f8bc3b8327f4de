"""The methods a comparison runs: named config variants of one base config.

``supcon``, ``dscl`` and ``dscl_pbsd`` share every setting of the config (backbone, views,
schedule, probe) and differ only by their overrides, so a paired comparison isolates the
loss. Any other registered method name runs as itself (``method=<name>``). Imports
nothing heavy: ``dscl-compare --help`` lists these.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dscl_plugin.errors import ConfigError
from dscl_plugin.training.registry import did_you_mean, method_label

if TYPE_CHECKING:  # no OmegaConf for dscl-compare --help
    from dscl_plugin.training.schema import Config


@dataclass(frozen=True)
class Variant:
    """``name`` (the key on the command line and in records), ``label`` (tables and
    figures), ``overrides`` applied after the config's and the user's, and what it is."""

    name: str
    label: str
    overrides: tuple[str, ...]
    description: str = ""


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "supcon",
            "SupCon",
            (
                "method=supcon",
                "model.alpha=null",
                "model.beta=null",
                "model.pbsd_weight=0",
                "model.num_patches=0",
            ),
            "SupCon in the same harness (EMA keys, labelled queue), no PBSD",
        ),
        Variant(
            "dscl",
            "DSCL",
            ("method=dscl", "model.pbsd_weight=0"),
            "DSCL alone (alpha or beta of the config), no PBSD",
        ),
        Variant(
            "dscl_pbsd",
            "DSCL+PBSD",
            ("method=dscl",),
            "DSCL + PBSD as the config sets them (needs model.pbsd_weight > 0)",
        ),
    )
}


def method_title(config: "Config") -> str:
    """The method's name in titles: ``DSCL+PBSD``, ``DSCL`` (``model.pbsd_weight: 0``),
    ``SupCon`` (the labels above), or another method's ``label`` (its registered name
    by default)."""
    if config.method == "dscl":
        return VARIANTS["dscl_pbsd" if config.model.pbsd_weight > 0 else "dscl"].label
    return VARIANTS["supcon"].label if config.method == "supcon" else method_label(config.method)


def resolve_variants(
    names: Sequence[str],
    registered: Iterable[str],
    extra: Mapping[str, Variant] | None = None,
) -> list[Variant]:
    """The variants ``names`` asks for: :data:`VARIANTS`, then ``extra``, then any
    ``registered`` method name as itself.

    Raises:
        ConfigError: an unknown name or one given twice, on one line.
    """
    known = {**VARIANTS, **(extra or {})}
    registered = sorted(registered)
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ConfigError(f"--methods: {', '.join(repeated)} given twice; name each method once.")
    variants = []
    for name in names:
        if name in known:
            variants.append(known[name])
        elif name in registered:
            label = method_label(name)
            variants.append(Variant(name, label, (f"method={name}",), "a registered method"))
        else:
            hint = did_you_mean(name, [*known, *registered])
            raise ConfigError(
                f"--methods: unknown method {name!r}; {hint}use one of {sorted(known)} or a "
                f"registered method {registered} (a method of your own: --import MODULE)."
            )
    if not variants:
        raise ConfigError("--methods: name at least one method.")
    return variants
