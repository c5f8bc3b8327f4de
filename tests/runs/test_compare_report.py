"""report.md's parts from records: class sizes with names (largest first), empty shot
groups with their reason, the package named without a git commit, and the warning under
3 paired seeds with the --seeds that completes them."""

from dscl_plugin.runs.compare_report import class_sizes, empty_groups, provenance, seeds_to_add


def _record(method="dscl", seed=0, **fields):
    eval_config = {"many_threshold": 100, "few_threshold": 20}
    return {"method": method, "seed": seed, "config": {"eval": eval_config}, **fields}


def test_class_sizes_are_named_largest_first_and_shortened_beyond_30_classes():
    record = _record(class_counts=[6, 300, 40], class_names=["cat", "dog", "eel"])
    assert class_sizes(record) == "dog (300), eel (40), cat (6)"
    assert class_sizes(_record(class_counts=[5, 9])) == "class 1 (9), class 0 (5)"  # no names
    many = class_sizes(_record(class_counts=list(range(1, 41))))
    assert many.startswith("class 39 (40), class 38 (39), ") and ", … 20 more …, " in many
    assert many.endswith("class 1 (2), class 0 (1)") and many.count("(") == 20


def test_empty_groups_give_the_recorded_reason_else_the_threshold_no_class_meets():
    # many > 100, few < 20: 300 ... 6 images fill every group
    assert empty_groups(_record(class_counts=[300, 40, 6])) == {}
    assert empty_groups(_record(class_counts=[90, 40, 30])) == {
        "many": "no class has > 100 training images",
        "few": "no class has < 20 training images",
    }
    given = {"many": "no class has > 100 training images (largest: 8)"}
    assert empty_groups(_record(class_counts=[6, 8], empty_groups=given)) == {
        "many": "no class has > 100 training images (largest: 8)",
        "medium": "no class has 20 ... 100 training images",
    }


def test_an_installed_package_is_named_by_its_version():
    installed = [{"version": "0.1.0", "git_commit": None}] * 2
    assert provenance(installed) == "dscl-plugin 0.1.0 (installed package, no git commit)"
    checkout = [{"version": "0.1.0", "git_commit": "44380efb18e1c0ffee"}]
    assert provenance(checkout) == "dscl-plugin 0.1.0, commit 44380efb18"


def _runs(*pairs):
    return [_record(method, seed) for method, seed in pairs]


def test_fewer_than_3_paired_seeds_are_warned_with_the_seeds_to_add():
    two = seeds_to_add(_runs(("supcon", 0), ("supcon", 1), ("dscl", 0), ("dscl", 1)), "supcon")
    assert two is not None and two.startswith("2 paired seeds: too few for the verdict to hold")
    assert "add `--seeds 0 1 2` to the same command" in two
    one = seeds_to_add(_runs(("supcon", 5), ("dscl", 5)), "supcon")
    assert one is not None and one.startswith("1 paired seed:") and "`--seeds 0 1 5`" in one
    # DSCL lacks seed 2: two paired seeds, though SupCon ran three
    lacking = _runs(*(("supcon", s) for s in range(3)), ("dscl", 0), ("dscl", 1))
    assert "2 paired seeds" in str(seeds_to_add(lacking, "supcon"))
    three = _runs(*((m, s) for m in ("supcon", "dscl") for s in range(3)))
    assert seeds_to_add(three, "supcon") is None
    assert seeds_to_add(_runs(("supcon", 0)), "supcon") is None  # nothing to compare
