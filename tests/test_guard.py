"""Table tests of detst.guard: every rule outcome of check_slice, pre_round, promotion and drift."""

from __future__ import annotations

import json

import pytest

from detst.config import DriftConfig, GuardConfig, GuardSliceConfig, PromotionConfig
from detst.guard import FAIL, INSUFFICIENT, NA, PASS, SliceStats, check_slice, drift, pre_round, promotion


def _s(name="night", metric=0.5, n_gt=100, recall=0.9, metric_ci=None, recall_ci=None, map_small=0.3,
       n_images=20) -> SliceStats:
    return SliceStats(name, n_images, n_gt, n_gt // 2, metric, metric_ci, map_small, recall, recall_ci,
                      None if recall is None else recall - 0.1, None)


def _rule(verdict, name):
    (r,) = [r for r in verdict.rules if r.name == name]
    return r


# ---------------------------------------------------------------- check_slice

@pytest.mark.parametrize("metric, floor, status, admitted", [
    (0.5, 0.35, PASS, True),
    (0.35, 0.35, PASS, True),           # exactly at the floor passes
    (0.3499, 0.35, FAIL, False),
    (None, 0.35, NA, True),             # metric undefined: not applicable, does not exclude
    (0.0, 0.0, PASS, True),
])
def test_check_slice_floor(metric, floor, status, admitted):
    v = check_slice(_s(metric=metric), None, GuardSliceConfig(floor=floor, min_support=10), "map50")
    r = _rule(v, "floor")
    assert (r.status, v.admitted) == (status, admitted)
    assert r.limit == floor
    if status == FAIL:
        assert "map50" in v.reason and "0.350" in v.reason
    if status == NA:
        assert r.value is None and "not applicable" in r.text


@pytest.mark.parametrize("ref_metric, metric, max_gap, status", [
    (0.8, 0.6, 0.3, PASS),
    (0.8, 0.5, 0.3, PASS),               # gap exactly at the limit
    (0.8, 0.4, 0.3, FAIL),
    (None, 0.4, 0.3, NA),                # reference undefined
    (0.8, None, 0.3, NA),
])
def test_check_slice_max_gap(ref_metric, metric, max_gap, status):
    ref = _s("day", metric=ref_metric)
    v = check_slice(_s(metric=metric), ref, GuardSliceConfig(max_gap=max_gap, min_support=1), "map50")
    r = _rule(v, "max_gap")
    assert r.status == status
    assert v.admitted is (status != FAIL)
    if status != NA:
        assert r.value == pytest.approx(ref_metric - metric)
        assert "day" in r.text


def test_check_slice_max_gap_without_reference_is_na():
    v = check_slice(_s(metric=0.1), None, GuardSliceConfig(max_gap=0.2, min_support=1), "map50")
    assert _rule(v, "max_gap").status == NA and v.admitted


@pytest.mark.parametrize("recall, limit, status", [
    (0.9, 0.2, PASS),
    (0.75, 0.2, FAIL),                   # misses 25 % > 20 %
    (None, 0.2, NA),
])
def test_check_slice_max_miss_rate(recall, limit, status):
    v = check_slice(_s(recall=recall), None, GuardSliceConfig(max_miss_rate=limit, min_support=1), "map50")
    r = _rule(v, "max_miss_rate")
    assert r.status == status
    if recall is not None:
        assert r.value == pytest.approx(1 - recall)


@pytest.mark.parametrize("n_gt, min_support, status", [
    (0, 0, INSUFFICIENT),               # no GT at all can never be verified
    (0, 20, INSUFFICIENT),
    (19, 20, INSUFFICIENT),
    (20, 20, PASS),
    (1, 0, PASS),
])
def test_check_slice_insufficient_support(n_gt, min_support, status):
    v = check_slice(_s(n_gt=n_gt, metric=0.9), None, GuardSliceConfig(floor=0.1, min_support=min_support), "map50")
    assert v.rules[0].name == "min_support" and v.rules[0].status == status
    if status == INSUFFICIENT:
        assert not v.admitted and len(v.rules) == 1 and "min_support" in v.reason
    else:
        assert v.admitted and _rule(v, "floor").status == PASS


@pytest.mark.parametrize("ci, straddles", [
    ((0.30, 0.40), True),                # the limit 0.35 lies inside the interval
    ((0.36, 0.50), False),
    ((0.20, 0.34), False),
    ((0.35, 0.40), True),                # on the edge counts as straddling
    (None, False),
])
def test_interval_straddling_the_limit_sets_straddles(ci, straddles):
    v = check_slice(_s(metric=0.37, metric_ci=ci), None, GuardSliceConfig(floor=0.35, min_support=1), "map50")
    r = _rule(v, "floor")
    assert r.status == PASS and r.straddles is straddles and r.ci == ci


def test_miss_rate_interval_is_the_mirrored_recall_interval():
    v = check_slice(_s(recall=0.82, recall_ci=(0.75, 0.9)), None,
                    GuardSliceConfig(max_miss_rate=0.2, min_support=1), "map50")
    r = _rule(v, "max_miss_rate")
    assert r.ci == pytest.approx((0.1, 0.25)) and r.straddles and r.status == PASS


def test_check_slice_with_no_rules_configured_admits():
    v = check_slice(_s(), None, GuardSliceConfig(min_support=1), "map50")
    assert v.admitted and [r.name for r in v.rules] == ["min_support"] and v.reason == "all rules pass"


def test_check_slice_several_failures_are_all_named():
    v = check_slice(_s(metric=0.1, recall=0.5), _s("day", metric=0.9),
                    GuardSliceConfig(floor=0.35, max_gap=0.3, max_miss_rate=0.2, min_support=1), "map50")
    assert not v.admitted
    assert [r.status for r in v.rules] == [PASS, FAIL, FAIL, FAIL]
    assert v.reason.count(";") == 2


# ---------------------------------------------------------------- pre_round

def _gcfg(**kw) -> GuardConfig:
    base = {"metric": "map50", "reference": "day", "teacher_floor": 0.35, "min_unlabeled_ratio": 10.0,
            "slices": {"day": GuardSliceConfig(floor=0.5, min_support=10),
                       "night": GuardSliceConfig(floor=0.35, max_gap=0.3, min_support=10)}}
    base.update(kw)
    return GuardConfig(**base)


def _stats(night=0.4, day=0.6, everything=0.55, night_gt=100):
    return {"all": _s("all", everything), "day": _s("day", day), "night": _s("night", night, n_gt=night_gt)}


@pytest.mark.parametrize("night, on_fail, proceed, excluded", [
    (0.4, "exclude_slice", True, []),
    (0.4, "block_round", True, []),
    (0.2, "exclude_slice", True, ["night"]),
    (0.2, "block_round", False, ["night"]),
])
def test_pre_round_exclude_slice_vs_block_round(night, on_fail, proceed, excluded):
    v = pre_round(_stats(night=night), _gcfg(on_fail=on_fail), 100, 2000, {"day": 1000, "night": 1000})
    assert (v.proceed, v.excluded) == (proceed, excluded)
    assert v.enabled
    assert [s.slice for s in v.slices] == ["day", "night"]
    if excluded:
        assert "night" in v.sentence and ("blocked" in v.sentence) is (not proceed)
    else:
        assert "every guarded slice passes" in v.sentence
    json.dumps(v.to_json())


def test_pre_round_insufficient_slice_is_excluded_not_silently_admitted():
    v = pre_round(_stats(night_gt=3), _gcfg(), 100, 2000, {})
    assert v.proceed and v.excluded == ["night"]


@pytest.mark.parametrize("on_fail, proceed", [("exclude_slice", True), ("block_round", False)])
def test_pre_round_guarded_slice_with_no_val_image_is_not_silently_admitted(on_fail, proceed):
    stats = _stats()
    del stats["night"]                    # val holds no night image: the slice is absent from the stats
    v = pre_round(stats, _gcfg(on_fail=on_fail), 100, 2000, {"night": 500})
    assert [s.slice for s in v.slices] == ["day", "night"]
    night = v.slices[1]
    assert not night.admitted and night.rules[0].status == INSUFFICIENT
    assert v.proceed is proceed and v.excluded == ["night"]


@pytest.mark.parametrize("everything, on_fail, proceed", [
    (0.2, "exclude_slice", False),
    (0.2, "block_round", False),
    (0.35, "exclude_slice", True),
    (None, "exclude_slice", True),        # undefined on all val: n/a, not a block
])
def test_pre_round_teacher_floor_blocks(everything, on_fail, proceed):
    v = pre_round(_stats(everything=everything), _gcfg(on_fail=on_fail), 100, 2000, {})
    r = next(r for r in v.readiness if r.name == "teacher_floor")
    assert v.proceed is proceed
    if not proceed:
        assert r.status == FAIL and "too weak" in v.sentence and v.excluded == []


def test_pre_round_teacher_floor_uses_all_even_without_an_all_entry():
    stats = _stats()
    del stats["all"]
    v = pre_round(stats, _gcfg(), 100, 2000, {})
    assert next(r for r in v.readiness if r.name == "teacher_floor").status == NA and v.proceed


def test_pre_round_guard_disabled_runs_unchecked():
    v = pre_round(_stats(night=0.0, everything=0.0), _gcfg(enabled=False, on_fail="block_round"), 100, 10, {})
    assert v.proceed and not v.enabled and v.excluded == [] and v.slices == []
    assert "disabled" in v.sentence


@pytest.mark.parametrize("n_labeled, n_pool, status", [(100, 1000, PASS), (100, 999, FAIL), (0, 10, PASS)])
def test_pre_round_unlabeled_ratio_is_reported(n_labeled, n_pool, status):
    v = pre_round(_stats(), _gcfg(), n_labeled, n_pool, {"night": 0, "day": 5})
    r = next(r for r in v.readiness if r.name == "unlabeled_ratio")
    assert r.status == status
    pool = {r.name: r.status for r in v.readiness if r.name.startswith("pool_slice:")}
    assert pool == {"pool_slice:day": PASS, "pool_slice:night": NA}


def test_pre_round_with_no_guarded_slice():
    v = pre_round({"all": _s("all", 0.6)}, _gcfg(slices={}, reference=None), 10, 100, {})
    assert v.proceed and v.slices == [] and "no slice is guarded" in v.sentence


# ---------------------------------------------------------------- promotion

def _pair(t_metric, s_metric, t_small=0.3, s_small=0.3, s_ci=None):
    return SliceStats("night", 10, 50, 20, t_metric, None, t_small, None, None, None, None), \
        SliceStats("night", 10, 50, 20, s_metric, s_ci, s_small, None, None, None, None)


@pytest.mark.parametrize("t, s, tol, promote", [
    (0.50, 0.50, 0.01, True),
    (0.50, 0.60, 0.01, True),
    (0.50, 0.49, 0.01, True),            # a drop of exactly the tolerance is allowed
    (0.50, 0.485, 0.01, False),          # beyond the tolerance: rejected
    (0.50, 0.40, 0.2, True),
])
def test_promotion_regression_beyond_tolerance_rejects(t, s, tol, promote):
    tn, sn = _pair(t, s)
    v = promotion({"all": _s("all", 0.5), "night": tn}, {"all": _s("all", 0.5), "night": sn}, ["night"],
                  PromotionConfig(max_regression=tol))
    assert v.promote is promote
    c = next(c for c in v.comparisons if c.slice == "night" and c.measure == "metric")
    assert c.status == (PASS if promote else FAIL) and c.delta == pytest.approx(s - t)
    if not promote:
        assert "rejected" in v.sentence and "night" in v.sentence


@pytest.mark.parametrize("t, s", [(None, 0.5), (0.5, None), (None, None)])
def test_promotion_slice_without_gt_never_counts_as_a_regression(t, s):
    tn, sn = _pair(t, s, t_small=t, s_small=s)
    v = promotion({"night": tn}, {"night": sn}, ["night"], PromotionConfig(max_regression=0.0))
    assert v.promote
    assert {c.status for c in v.comparisons} == {NA}


def test_promotion_small_object_ap_regression_rejects():
    tn, sn = _pair(0.5, 0.5, t_small=0.3, s_small=0.2)
    v = promotion({"night": tn}, {"night": sn}, ["night"], PromotionConfig(max_regression=0.05))
    assert not v.promote
    assert [c.measure for c in v.comparisons if c.status == FAIL] == ["ap_small"]


@pytest.mark.parametrize("ci, promote", [
    ((0.40, 0.47), True),                # upper bound >= 0.5 - 0.05: the drop is not certain
    ((0.38, 0.44), False),               # upper bound below: certain regression
    (None, False),                       # no interval: the point estimate decides
])
def test_promotion_use_interval(ci, promote):
    tn, sn = _pair(0.5, 0.42, s_ci=ci)
    v = promotion({"night": tn}, {"night": sn}, ["night"], PromotionConfig(max_regression=0.05, use_interval=True))
    assert v.promote is promote


def test_promotion_checks_all_and_skips_slices_missing_on_one_side():
    v = promotion({"all": _s("all", 0.6), "rain": _s("rain", 0.9)}, {"all": _s("all", 0.5)}, ["rain", "all"],
                  PromotionConfig(max_regression=0.01))
    assert not v.promote and {c.slice for c in v.comparisons} == {"all"}


def test_promotion_disabled_promotes_but_still_reports():
    tn, sn = _pair(0.5, 0.1)
    v = promotion({"night": tn}, {"night": sn}, ["night"], PromotionConfig(), enabled=False)
    assert v.promote and any(c.status == FAIL for c in v.comparisons) and "disabled" in v.sentence


def test_promotion_with_nothing_to_compare():
    v = promotion({}, {}, [], PromotionConfig())
    assert v.promote and v.comparisons == []


# ---------------------------------------------------------------- drift

def _drift(class_share, collapse_action, action="warn", density=None, empty=None):
    density = {"night": 2.0} if density is None else density
    empty = {"night": 0.1} if empty is None else empty
    return drift(density, 2.0, empty, class_share, {"car": 0.6, "person": 0.3, "light": 0.1}, 0.2,
                 DriftConfig(action=action), collapse_action)


@pytest.mark.parametrize("share, action, proceed, text", [
    ({"car": 0.6, "person": 0.3, "light": 0.1}, "warn", True, "No drift"),
    ({"car": 0.6, "person": 0.3, "light": 0.1}, "block", True, "No drift"),
    ({"car": 0.97, "person": 0.03}, "warn", True, "Warning"),         # persons 0.1 of prior, lights gone
    ({"car": 0.97, "person": 0.03}, "block", False, "blocked"),
])
def test_drift_class_collapse_warn_vs_block(share, action, proceed, text):
    v = _drift(share, action)
    assert v.proceed is proceed and text in v.sentence
    failed = sorted(r.name for r in v.signals if r.status == FAIL)
    assert failed == ([] if text == "No drift" else ["class_share:light", "class_share:person"])


@pytest.mark.parametrize("density, empty, action, proceed, failed", [
    ({"night": 7.0}, {"night": 0.1}, "warn", True, ["density_high:night"]),
    ({"night": 7.0}, {"night": 0.1}, "block", False, ["density_high:night"]),
    ({"night": 0.2}, {"night": 0.9}, "block", False, ["density_low:night", "empty_share:night"]),
    ({"night": None}, {"night": None}, "block", True, []),            # no pool images in the slice: n/a
    ({}, {}, "block", True, []),
])
def test_drift_density_and_empty_share(density, empty, action, proceed, failed):
    v = _drift({"car": 0.6, "person": 0.3, "light": 0.1}, "warn", action, density, empty)
    assert v.proceed is proceed
    assert sorted(r.name for r in v.signals if r.status == FAIL) == failed


def test_drift_zero_labeled_density_and_zero_prior_are_na():
    v = drift({"night": 1.0}, 0.0, {}, {}, {"car": 0.0}, 0.2, DriftConfig(action="block"), "block")
    assert v.proceed
    assert {r.status for r in v.signals} <= {NA, PASS}


def test_drift_sentence_of_many_collapsing_classes_is_one_clause_with_the_lowest_named():
    prior = {f"c{k:02d}": 1 / 50 for k in range(50)}
    share = {"c00": 0.9, **{f"c{k:02d}": 0.1 * (k - 1) / 1225 for k in range(2, 50)}}   # c01 gone, c02.. tiny
    v = drift({"all": 2.0}, 2.0, {"all": 0.1}, share, prior, 0.2, DriftConfig(action="warn"), "warn")
    failed = [r for r in v.signals if r.status == FAIL]
    assert len(failed) == 49 and all(r.name.startswith("class_share:") for r in failed)   # every rule kept
    assert v.proceed and v.sentence.startswith("Warning: 49 classes below")
    assert "c01 0.000, c02 0.004, c03 0.008" in v.sentence and "c04" not in v.sentence
    assert len(v.sentence) < 200
