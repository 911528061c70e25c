"""The guard's decisions, as pure functions over measured numbers.

pre-round: per guarded slice, the teacher's metric against a floor, its gap to the
reference slice, its miss rate at the pseudo thresholds, and the GT support; each rule
says pass / fail / n/a (metric undefined: no GT) / insufficient (too little support),
with a bootstrap interval and whether that interval straddles the limit. A failed slice
is excluded from pseudo-labeling or blocks the round, per config.
drift: signals on the pool that need no GT (density, empty share, class collapse).
promotion: the student against the teacher per slice and per size bucket.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from detst.config import DriftConfig, GuardConfig, GuardSliceConfig, PromotionConfig

PASS, FAIL, NA, INSUFFICIENT = "pass", "fail", "n/a", "insufficient"
# slack for comparisons at a limit: 0.8 - 0.5 is 0.30000000000000004, and a gap of 0.300 must not fail
# max_gap 0.3 (nor a drop of 0.010 fail max_regression 0.01) by float rounding
EPS = 1e-9


@dataclass
class SliceStats:
    """A model's numbers on one val slice (None = undefined)."""

    name: str
    n_images: int
    n_gt: int
    n_gt_small: int
    metric: float | None                 # the guard's metric (pycocotools)
    metric_ci: tuple[float, float] | None
    map_small: float | None              # small-object AP at the guard metric's IoU (AP50 small for map50)
    recall: float | None                 # at the pseudo thresholds, IoU 0.5
    recall_ci: tuple[float, float] | None
    recall_small: float | None
    recall_small_ci: tuple[float, float] | None
    eval: dict[str, Any] | None = None   # the slice's full evaluation (detst.evaluate.SliceEval), for reports

    @property
    def miss_rate(self) -> float | None:
        return None if self.recall is None else 1.0 - self.recall


@dataclass
class Rule:
    name: str
    status: str
    value: float | None = None
    limit: float | None = None
    ci: tuple[float, float] | None = None
    straddles: bool = False
    text: str = ""


def _ci_straddles(ci: tuple[float, float] | None, limit: float) -> bool:
    return ci is not None and ci[0] <= limit <= ci[1]


def rule_min(name: str, value: float | None, limit: float | None, ci=None, what: str = "") -> Rule | None:
    """value must be >= limit."""
    if limit is None:
        return None
    if value is None:
        return Rule(name, NA, None, limit, text=f"{what or name} undefined (no GT): not applicable")
    ok = value >= limit - EPS
    return Rule(name, PASS if ok else FAIL, value, limit, ci, _ci_straddles(ci, limit),
                f"{what or name} {value:.3f} {'>=' if ok else '<'} {limit:.3f}")


def rule_max(name: str, value: float | None, limit: float | None, ci=None, what: str = "") -> Rule | None:
    """value must be <= limit."""
    if limit is None:
        return None
    if value is None:
        return Rule(name, NA, None, limit, text=f"{what or name} undefined (no GT): not applicable")
    ok = value <= limit + EPS
    return Rule(name, PASS if ok else FAIL, value, limit, ci, _ci_straddles(ci, limit),
                f"{what or name} {value:.3f} {'<=' if ok else '>'} {limit:.3f}")


@dataclass
class SliceVerdict:
    slice: str
    admitted: bool
    rules: list[Rule]
    reason: str


def check_slice(s: SliceStats, ref: SliceStats | None, g: GuardSliceConfig, metric: str) -> SliceVerdict:
    """Every configured rule for one guarded slice; the slice is admitted when none fails."""
    if s.n_gt < max(1, g.min_support):
        r = Rule("min_support", INSUFFICIENT, s.n_gt, g.min_support,
                 text=f"{s.n_gt} GT boxes < min_support {g.min_support}: cannot be verified")
        return SliceVerdict(s.name, False, [r], r.text)
    rules = [Rule("min_support", PASS, s.n_gt, g.min_support, text=f"{s.n_gt} GT boxes >= {g.min_support}")]
    rules.append(rule_min("floor", s.metric, g.floor, s.metric_ci, metric))
    if g.max_gap is not None:
        gap = None if s.metric is None or ref is None or ref.metric is None else ref.metric - s.metric
        refname = ref.name if ref else "reference"
        rules.append(rule_max("max_gap", gap, g.max_gap, what=f"gap to {refname} ({metric})"))
    miss_ci = None if s.recall_ci is None else (1 - s.recall_ci[1], 1 - s.recall_ci[0])
    rules.append(rule_max("max_miss_rate", s.miss_rate, g.max_miss_rate, miss_ci, "miss rate"))
    rules = [r for r in rules if r is not None]
    failed = [r for r in rules if r.status == FAIL]
    reason = "; ".join(r.text for r in failed) if failed else "all rules pass"
    return SliceVerdict(s.name, not failed, rules, reason)


@dataclass
class PreVerdict:
    proceed: bool
    excluded: list[str]
    slices: list[SliceVerdict]
    readiness: list[Rule]
    sentence: str
    enabled: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def pre_round(stats: dict[str, SliceStats], cfg: GuardConfig, n_labeled: int, n_pool: int,
              pool_per_slice: dict[str, int]) -> PreVerdict:
    """Admit, exclude or block from the teacher's per-slice numbers on val."""
    everything = stats.get("all")
    readiness = [
        rule_min("unlabeled_ratio", n_pool / max(n_labeled, 1), cfg.min_unlabeled_ratio,
                 what=f"unlabeled/labeled ({n_pool}/{n_labeled})"),
        rule_min("teacher_floor", everything.metric if everything else None, cfg.teacher_floor,
                 everything.metric_ci if everything else None, f"teacher {cfg.metric} on all val"),
    ]
    readiness += [Rule(f"pool_slice:{k}", PASS if v else NA, v, text=f"{v} pool images in slice {k}")
                  for k, v in sorted(pool_per_slice.items())]
    readiness = [r for r in readiness if r is not None]
    if not cfg.enabled:
        return PreVerdict(True, [], [], readiness, "Guard disabled: the round runs unchecked.", enabled=False)
    ref = stats.get(cfg.reference) if cfg.reference else None
    # a guarded slice with no val image at all is unverifiable (insufficient), never silently skipped
    missing = SliceStats("", 0, 0, 0, None, None, None, None, None, None, None)
    verdicts = [check_slice(stats.get(name) or replace(missing, name=name), ref, g, cfg.metric)
                for name, g in cfg.slices.items()]
    failed = [v for v in verdicts if not v.admitted]
    teacher_bad = any(r.name == "teacher_floor" and r.status == FAIL for r in readiness)
    if teacher_bad:
        r = next(r for r in readiness if r.name == "teacher_floor")
        return PreVerdict(False, [], verdicts, readiness, f"Round blocked: {r.text} — the teacher is too weak to label.")
    if failed and cfg.on_fail == "block_round":
        return PreVerdict(False, [v.slice for v in failed], verdicts, readiness,
                          "Round blocked: " + "; ".join(f"slice {v.slice}: {v.reason}" for v in failed) + ".")
    excluded = [v.slice for v in failed]
    if excluded:
        s = ("Round proceeds without slice(s) " + ", ".join(excluded) + ": "
             + "; ".join(f"{v.slice}: {v.reason}" for v in failed) + ".")
    else:
        s = "Round proceeds: every guarded slice passes." if verdicts else "Round proceeds: no slice is guarded."
    return PreVerdict(True, excluded, verdicts, readiness, s)


@dataclass
class DriftVerdict:
    proceed: bool
    signals: list[Rule]
    sentence: str


_LISTED = 3          # collapsing classes named one by one in a drift sentence


def drift(pool_density: dict[str, float | None], labeled_density: float, empty_share: dict[str, float | None],
          class_share: dict[str, float], prior_share: dict[str, float], min_class_share: float,
          cfg: DriftConfig, collapse_action: str) -> DriftVerdict:
    """GT-free signals on the pseudo-labeled pool, each against its configured limit."""
    sig: list[Rule] = []
    for s, dens in pool_density.items():
        ratio = None if dens is None or labeled_density == 0 else dens / labeled_density
        sig.append(rule_max(f"density_high:{s}", ratio, cfg.max_density_ratio,
                            what=f"pseudo boxes/image in {s} ÷ labeled"))
        sig.append(rule_min(f"density_low:{s}", ratio, cfg.min_density_ratio,
                            what=f"pseudo boxes/image in {s} ÷ labeled"))
        sig.append(rule_max(f"empty_share:{s}", empty_share.get(s), cfg.max_empty_share,
                            what=f"share of {s} images with no kept box"))
    collapse = []
    for c, prior in prior_share.items():
        rel = class_share.get(c, 0.0) / prior if prior > 0 else None
        r = rule_min(f"class_share:{c}", rel, min_class_share, what=f"{c} pseudo share ÷ labeled share")
        sig.append(r)
        if r is not None and r.status == FAIL:
            collapse.append(r)
    sig = [r for r in sig if r is not None]
    fails = [r for r in sig if r.status == FAIL]
    block = (any(not r.name.startswith("class_share") for r in fails) and cfg.action == "block") or \
            (bool(collapse) and collapse_action == "block")
    if not fails:
        return DriftVerdict(True, sig, "No drift or collapse signal on the pool.")
    others = [r.text for r in fails if not r.name.startswith("class_share")]
    if len(collapse) > _LISTED:        # one line, not a clause per class: every rule is in the verdict's signals
        low = sorted(collapse, key=lambda r: r.value)
        others.append(f"{len(collapse)} classes below their labeled share × {min_class_share:g} (lowest: "
                      + ", ".join(f"{r.name.split(':', 1)[1]} {r.value:.3f}" for r in low[:_LISTED])
                      + "; all in guard_drift.json)")
    else:
        others += [r.text for r in collapse]
    text = "; ".join(others)
    return DriftVerdict(not block, sig, ("Round blocked by pool signals: " if block else "Warning: ") + text + ".")


@dataclass
class Comparison:
    slice: str
    measure: str
    teacher: float | None
    student: float | None
    delta: float | None
    status: str
    text: str


@dataclass
class PostVerdict:
    promote: bool
    comparisons: list[Comparison] = field(default_factory=list)
    sentence: str = ""


def promotion(teacher: dict[str, SliceStats], student: dict[str, SliceStats], guarded: list[str],
              cfg: PromotionConfig, enabled: bool = True) -> PostVerdict:
    """Reject the student when any guarded slice (and ``all``), or its small-object AP, drops
    by more than the tolerance. Undefined on either side is n/a — never a regression."""
    comps = []
    for name in ["all", *[g for g in guarded if g != "all"]]:
        if name not in teacher or name not in student:
            continue
        t, s = teacher[name], student[name]
        for measure, tv, sv in (("metric", t.metric, s.metric), ("ap_small", t.map_small, s.map_small)):
            if tv is None or sv is None:
                comps.append(Comparison(name, measure, tv, sv, None, NA, f"{name} {measure}: undefined, n/a"))
                continue
            d = sv - tv
            bad = d < -cfg.max_regression - EPS
            if bad and cfg.use_interval and s.metric_ci is not None and measure == "metric":
                bad = s.metric_ci[1] < tv - cfg.max_regression - EPS
            comps.append(Comparison(name, measure, tv, sv, d, FAIL if bad else PASS,
                                    f"{name} {measure} {tv:.3f} → {sv:.3f} ({d:+.3f}, tolerance {cfg.max_regression})"))
    fails = [c for c in comps if c.status == FAIL]
    if not enabled:
        return PostVerdict(True, comps, "Guard disabled: student promoted unchecked.")
    if fails:
        return PostVerdict(False, comps, "Student rejected: " + "; ".join(c.text for c in fails) + ".")
    return PostVerdict(True, comps, "Student promoted: no guarded slice regressed beyond the tolerance.")
