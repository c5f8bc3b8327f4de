"""report.md's parts from records: class sizes with names (largest first), empty shot
groups with their reason, the package named without a git commit, and the warning under
3 paired seeds with the --seeds that completes them."""

import dscl_plugin.methods  # noqa: F401  (registers the built-in methods)
from dscl_plugin.runs.compare_report import (
    class_sizes,
    data_name,
    empty_groups,
    own_classifier_section,
    provenance,
    seeds_to_add,
)
from dscl_plugin.runs.variants import Variant, resolve_variants
from dscl_plugin.training.registry import available_methods, method_label


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


def test_own_classifiers_get_their_own_table_labelled_as_such():
    paco = Variant("paco", "PaCo", ("method=paco",))
    supcon = Variant("supcon", "SupCon", ("method=supcon",))
    own = [{"overall": 0.5, "many": 0.7, "medium": 0.4, "few": 0.1}, None]
    records = [
        _record(method, seed, class_counts=[300, 40, 6], own_classifier=o)
        for seed, o in ((0, own[0]), (1, {**own[0], "overall": 0.6}))
        for method in ("supcon", "paco")
    ]
    for r in records:
        if r["method"] == "supcon":
            r["own_classifier"] = None
    lines = own_classifier_section(records, [supcon, paco])
    table = "\n".join(lines)
    assert "the classifier a method trains itself" in lines[0]
    assert (
        "| PaCo's own classifier | 2 | 55.0 ± 7.1 | 70.0 ± 0.0 | 40.0 ± 0.0 | 10.0 ± 0.0 |" in table
    )
    assert "SupCon" not in table and "(paired)" not in table
    assert own_classifier_section(records[::2], [supcon, paco]) == []  # SupCon only: none


def test_a_registered_method_is_shown_by_its_label():
    assert resolve_variants(["supcon", "kcl"], available_methods())[1].label == "KCL"
    assert method_label("not_registered") == "not_registered"


def test_an_image_folder_is_named_by_its_folder():
    record = {"dataset": "image_folder", "config": {"data": {"root": "/data/my_images"}}}
    assert data_name(record) == "my_images (image_folder)"
    assert data_name({"dataset": "digits_lt", "config": {}}) == "digits_lt"
