"""Many / medium / few-shot class groups by training-set class size."""

from collections.abc import Sequence

from dscl_plugin import checks

SHOT_GROUPS = ("many", "medium", "few")  # the largest classes first
# the accuracies of a run: over all test images, then the mean over each group's classes
ACCURACY_GROUPS = ("overall", *SHOT_GROUPS)


def shot_groups(
    class_counts: Sequence[int], many_threshold: int = 100, few_threshold: int = 20
) -> dict[str, list[int]]:
    """Split classes by training size n_c: many ``n_c > many_threshold``, medium
    ``few_threshold <= n_c <= many_threshold``, few ``n_c < few_threshold``.

    Returns:
        ``dict(many=[...], medium=[...], few=[...])`` of class indices (possibly empty).
    """
    checks.require(
        few_threshold <= many_threshold,
        "few_threshold",
        f"must be <= many_threshold ({many_threshold}), got {few_threshold}",
    )
    groups: dict[str, list[int]] = {group: [] for group in SHOT_GROUPS}
    for c, n in enumerate(class_counts):
        if n > many_threshold:
            groups["many"].append(c)
        elif n < few_threshold:
            groups["few"].append(c)
        else:
            groups["medium"].append(c)
    return groups


def empty_groups(
    class_counts: Sequence[int], many_threshold: int = 100, few_threshold: int = 20
) -> dict[str, str]:
    """The shot groups of :func:`shot_groups` that hold no class, each with why:
    ``{"many": "no class has > 1000 training images"}`` (``{}`` when none is empty)."""
    sizes = {
        "many": f"> {many_threshold}",
        "medium": f"{few_threshold} ... {many_threshold}",
        "few": f"< {few_threshold}",
    }
    groups = shot_groups(class_counts, many_threshold, few_threshold)
    return {
        group: f"no class has {sizes[group]} training images"
        for group, classes in groups.items()
        if not classes
    }
