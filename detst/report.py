"""report.md / report.json / report.html and plots for a round, and a run summary —
built from the files in the run folder alone (no model is loaded)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from detst.boxes import SIZE_BUCKETS
from detst.io import rows
from detst.io.files import atomic_write_bytes, atomic_write_text, read_json, write_json


def _load(p: Path) -> Any:
    try:
        return read_json(p) if p.exists() else None
    except (OSError, json.JSONDecodeError):
        return None


def _f(v: Any, nd: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _ci(ci: Any) -> str:
    return "" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def summarize(rdir: Path, decision: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report's numbers, from the round folder's files."""
    decision = decision or _load(rdir / "decision.json") or {}
    pre = _load(rdir / "guard_pre.json") or {}
    post = _load(rdir / "guard_post.json") or {}
    pseudo = _load(rdir / "pseudo_summary.json") or {}
    drift = _load(rdir / "guard_drift.json") or {}
    th = _load(rdir / "thresholds.json") or {}
    inputs = _load(rdir / "inputs.json") or {}
    teacher = pre.get("teacher", {})
    student = post.get("student", {})
    slices = {}
    for name in sorted(set(teacher) | set(student)):
        t, s = teacher.get(name, {}), student.get(name, {})
        slices[name] = {k: {"teacher": t.get(k), "student": s.get(k) if s else None}
                        for k in ("metric", "map_small", "recall", "recall_small", "n_gt", "n_images")}
    try:
        index = decision.get("round") or int(rdir.name.split("_")[1])
    except (IndexError, ValueError):
        index = None
    return {"round": index, "status": decision.get("status"), "sentence": decision.get("sentence"),
            "teacher": decision.get("teacher"), "student": decision.get("student"),
            "guard_pre": pre.get("verdict", {}).get("sentence"), "excluded": pre.get("verdict", {}).get("excluded", []),
            "guard_post": post.get("verdict", {}).get("sentence"), "drift": drift.get("sentence"),
            "precision_target": th.get("target"),
            "pseudo": {k: pseudo.get(k) for k in ("n_images", "n_kept", "n_ignored", "class_hist", "dropped",
                                                   "mean_kept_score", "excluded_images", "pool_dropped")},
            "inputs": {"counts": inputs.get("counts"), "dropped_on_load": inputs.get("dropped_on_load"),
                       "dropped_files": inputs.get("dropped_files")},
            "slices": slices}


# ------------------------------------------------------------------ plots

def _thresholded(rows: list[dict[str, Any]], th: dict, names: list[str]) -> dict[int, list]:
    """Raw val predictions -> per image [(xyxy, label)] above their class × size threshold."""
    from detst.boxes import areas_xyxy, size_bucket_index

    cell = {(c["class"], c["size"]): c["threshold"] for c in th.get("cells", []) if c["slice"] == "*"}
    out = {}
    for r in rows:
        xyxy = np.array(r["xyxy"], dtype=np.float64).reshape(-1, 4)
        sizes = size_bucket_index(areas_xyxy(xyxy))
        keep = []
        for b, s, c, z in zip(xyxy, r["score"], r["cls"], sizes):
            t = cell.get((names[c], SIZE_BUCKETS[z]), 1.0)
            if s >= t:
                keep.append((b.tolist(), f"{names[c]} {s:.2f}"))
        out[r["image_id"]] = keep
    return out


def _plots(rdir: Path, summary: dict[str, Any], pre: dict, th: dict, pseudo: dict) -> list[Path]:
    from detst import report_plots as P

    out = rdir / "plots"
    out.mkdir(exist_ok=True)
    made: list[Path | None] = []
    plt = P._plt()
    sl = summary["slices"]
    if sl:
        names = list(sl)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for ax, key, title in ((axes[0], "metric", "guard metric per slice (red: floor)"),
                               (axes[1], "recall_small", "small-object recall at thresholds")):
            x = np.arange(len(names))
            ax.bar(x - 0.2, [sl[n][key]["teacher"] or 0 for n in names], 0.4, label="teacher")
            ax.bar(x + 0.2, [sl[n][key]["student"] or 0 for n in names], 0.4, label="student")
            ax.set_xticks(x, names)
            ax.set_ylim(0, 1)
            ax.set_title(title)
            if key == "metric":
                for v in pre.get("verdict", {}).get("slices", []):
                    for r in v["rules"]:
                        if r["name"] == "floor" and v["slice"] in names:
                            i = names.index(v["slice"])
                            ax.hlines(r["limit"], i - 0.45, i + 0.45, colors="red", linestyles="--")
            ax.legend(fontsize=7)
        made.append(P.save_fig(fig, out / "slice_metrics.png"))
    cells = [c for c in th.get("cells", []) if c["slice"] == "*" and c["class"] != "*" and c["size"] != "*"]
    if cells:
        classes = sorted({c["class"] for c in cells})
        grid = np.full((len(classes), len(SIZE_BUCKETS)), np.nan)
        for c in cells:
            grid[classes.index(c["class"]), SIZE_BUCKETS.index(c["size"])] = c["threshold"]
        fig, ax = plt.subplots(figsize=(5, 0.35 * len(classes) + 1.8))
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(SIZE_BUCKETS)), SIZE_BUCKETS)
        ax.set_yticks(range(len(classes)), classes, fontsize=7 if len(classes) > 10 else 9)
        if len(classes) <= 20:
            for i in range(len(classes)):
                for j in range(len(SIZE_BUCKETS)):
                    if np.isfinite(grid[i, j]):
                        ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
        fig.colorbar(im, ax=ax)
        ax.set_title(f"thresholds, class × size (precision target {th.get('target')})")
        made.append(P.save_fig(fig, out / "thresholds.png"))
    inputs = _load(rdir / "inputs.json") or {}
    pc = pseudo.get("cells", {})
    if pc:
        made.append(P.size_outcomes(pc, pseudo.get("dropped_by_size", {}), out / "pseudo_sizes.png"))
        made.append(P.class_balance(pc, inputs.get("labeled_class_hist", {}), out / "class_balance.png"))
    jsonl = rdir / "pool_predictions.jsonl"
    coco = _load(rdir / "pseudo_labels.json")
    if jsonl.exists() and coco:
        slices_of = {im["id"]: im.get("slices", ["all"]) for im in coco["images"]}
        scores: dict[str, list[np.ndarray]] = {}
        for row in rows.read(jsonl):           # streamed: the raw detections of the whole pool can be large
            got = np.asarray(row.get("score", []), np.float32)
            for s in slices_of.get(row["id"], []):
                scores.setdefault(s, []).append(got)
        made.append(P.score_histograms({k: np.concatenate(v) for k, v in scores.items()},
                                       [c["threshold"] for c in cells], out / "score_histograms.png"))
        made += P.pool_examples(coco, out)
    tv, sv = _load(rdir / "teacher_val_predictions.json"), _load(rdir / "student_val_predictions.json")
    val_src = inputs.get("sources", {})
    if tv and sv and val_src.get("val_annotations") and Path(val_src["val_annotations"]).exists():
        from detst.io.coco import load_coco

        try:
            val = load_coco(Path(val_src["val_annotations"]), Path(val_src["val_images"]), check_files=False)
        except Exception:  # noqa: BLE001 - the report must not fail for a moved val set
            val = None
        if val is not None:
            names = list(val.classes.names)
            gt = {im.id: (str(im.path), [(b.tolist(), names[c]) for b, c in zip(val.boxes[im.id].xyxy,
                                                                                 val.boxes[im.id].class_id)])
                  for im in val.images}
            made.append(P.val_compare(gt, _thresholded(tv["raw"], th, names), _thresholded(sv["raw"], th, names),
                                      out / "val_teacher_vs_student.png"))
    return [p for p in made if p is not None]


# ------------------------------------------------------------------ markdown / html

def _md(rdir: Path, summary: dict[str, Any], pre: dict, post: dict, th: dict, pseudo: dict, drift: dict,
        plots: list[Path]) -> str:
    L = [f"# detst round {summary['round']} — {summary['status'] or 'in progress'}", "",
         f"**{summary['sentence'] or summary['guard_pre'] or ''}**", "", "## Guard verdict and evidence", ""]
    v = pre.get("verdict", {})
    L.append(f"- before the round: {v.get('sentence', 'n/a')}")
    if drift:
        L.append(f"- pool signals: {drift.get('sentence')}")
    if post:
        L.append(f"- promotion gate: {post.get('verdict', {}).get('sentence')}")
    L += ["", "| slice | rule | status | value | limit | 90% interval | note |", "|---|---|---|---|---|---|---|"]
    for sv in v.get("slices", []):
        for r in sv["rules"]:
            flag = " (interval straddles the limit)" if r.get("straddles") else ""
            L.append(f"| {sv['slice']} | {r['name']} | {r['status']} | {_f(r['value'])} | {_f(r['limit'])} | "
                     f"{_ci(r.get('ci')).strip() or '—'} | {r['text']}{flag} |")
    L += ["", "Readiness checklist:", ""]
    for r in v.get("readiness", []):
        L.append(f"- [{'x' if r['status'] == 'pass' else ' '}] {r['text']} ({r['status']})")
    if post:
        L += ["", "| slice | measure | teacher | student | Δ | status |", "|---|---|---|---|---|---|"]
        for c in post.get("verdict", {}).get("comparisons", []):
            L.append(f"| {c['slice']} | {c['measure']} | {_f(c['teacher'])} | {_f(c['student'])} | "
                     f"{_f(c['delta'])} | {c['status']} |")
    inp = summary.get("inputs") or {}
    if inp.get("counts"):
        c, d = inp["counts"], inp.get("dropped_on_load") or {}
        L += ["", "## Inputs", "", f"{c.get('labeled')} labeled, {c.get('val')} val and {c.get('pool')} pool images used.",
              "", "| set | dropped or fixed on load |", "|---|---|"]
        for k in ("labeled", "val", "pool"):
            L.append(f"| {k} | {', '.join(f'{n} {r}' for r, n in sorted((d.get(k) or {}).items())) or 'nothing'} |")
        files = [f for k in ("labeled", "val", "pool") for f in ((inp.get("dropped_files") or {}).get(k) or [])]
        if files:
            L += ["", f"Dropped image files ({len(files)}" + (", the first 20" if len(files) > 20 else "") + "):", ""]
            L += [f"- `{f}`" for f in files[:20]]
    L += ["", "## Per-slice metrics on val (pycocotools; recall at the pseudo thresholds, IoU 0.5)", "",
          "| slice | images | GT | teacher metric | student metric | teacher AP small | student AP small | "
          "teacher recall | student recall | teacher small recall | student small recall |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in summary["slices"].items():
        L.append(f"| {name} | {m['n_images']['teacher']} | {m['n_gt']['teacher']} | {_f(m['metric']['teacher'])} | "
                 f"{_f(m['metric']['student'])} | {_f(m['map_small']['teacher'])} | {_f(m['map_small']['student'])} | "
                 f"{_f(m['recall']['teacher'])} | {_f(m['recall']['student'])} | "
                 f"{_f(m['recall_small']['teacher'])} | {_f(m['recall_small']['student'])} |")
    if th:
        L += ["", f"## Thresholds (precision target {th.get('target')})", "",
              "| slice | class | size | threshold | precision | recall | support | level | note |",
              "|---|---|---|---|---|---|---|---|---|"]
        for c in th.get("cells", []):
            L.append(f"| {c['slice']} | {c['class']} | {c['size']} | {c['threshold']:.3f} | {_f(c['precision'])} | "
                     f"{_f(c['recall'])} | {c['support']} | {c['level']} | {c['note']} |")
    if pseudo:
        L += ["", "## Pseudo-labels", "",
              f"{pseudo.get('n_kept')} boxes kept and {pseudo.get('n_ignored')} ignore regions on "
              f"{pseudo.get('n_images')} pool images; {pseudo.get('excluded_images', 0)} images excluded by the guard; "
              f"mean kept score {_f(pseudo.get('mean_kept_score'))}.", "",
              f"Dropped: {pseudo.get('dropped')}; on load: {pseudo.get('pool_dropped')}.", "",
              "| slice | class | size | kept | ignored |", "|---|---|---|---|---|"]
        for key, v in pseudo.get("cells", {}).items():
            s, c, b = key.split("|")
            L.append(f"| {s} | {c} | {b} | {v.get('kept', 0)} | {v.get('ignored', 0)} |")
    if plots:
        L += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
    if (rdir / "augmented_samples.jpg").exists():
        L += ["", "## Augmented training samples (student)", "", "![augmented](augmented_samples.jpg)"]
    return "\n".join(L) + "\n"


def _html(md_text: str, rdir: Path) -> str:
    """A self-contained page: the markdown's tables and images, images inlined as base64."""
    body = []
    rows: list[str] = []

    def flush():
        if rows:
            cells = [r.strip("|").split("|") for r in rows if not set(r.replace("|", "").strip()) <= {"-"}]
            t = "".join("<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c.strip())}</{'th' if i == 0 else 'td'}>"
                                         for c in row) + "</tr>" for i, row in enumerate(cells))
            body.append(f"<table>{t}</table>")
            rows.clear()

    for line in md_text.splitlines():
        if line.startswith("|"):
            rows.append(line)
            continue
        flush()
        if line.startswith("![") and "](" in line:
            src = line.split("](", 1)[1].rstrip(")")
            p = rdir / src
            if p.exists():
                mime = "image/png" if p.suffix == ".png" else "image/jpeg"
                b64 = base64.b64encode(p.read_bytes()).decode()
                body.append(f'<figure><img alt="{html.escape(p.stem)}" src="data:{mime};base64,{b64}"></figure>')
        elif line.startswith("#"):
            n = len(line) - len(line.lstrip("#"))
            body.append(f"<h{n}>{html.escape(line[n:].strip())}</h{n}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line.replace('**', ''))}</p>")
    flush()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}table{border-collapse:collapse;"
             "margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>detst report</title><style>{style}</style>" \
           f"</head><body>{''.join(body)}</body></html>\n"


def write_report(rdir: Path, decision: dict[str, Any] | None = None) -> dict[str, Any]:
    """(Re)write report.json, report.md, report.html and plots/ of one round folder."""
    rdir = Path(rdir)
    pre = _load(rdir / "guard_pre.json") or {}
    post = _load(rdir / "guard_post.json") or {}
    th = _load(rdir / "thresholds.json") or {}
    pseudo = _load(rdir / "pseudo_summary.json") or {}
    drift = _load(rdir / "guard_drift.json") or {}
    summary = summarize(rdir, decision)
    plots = _plots(rdir, summary, pre, th, pseudo)
    md_text = _md(rdir, summary, pre, post, th, pseudo, drift, plots)
    write_json(rdir / "report.json", summary)
    atomic_write_text(rdir / "report.md", md_text)
    atomic_write_bytes(rdir / "report.html", _html(md_text, rdir).encode())
    return summary


def write_run_summary(run_dir: Path) -> Path:
    """run_dir/summary.md (+ summary.png): per round and slice, the teacher, the student and
    the model in service after the round's decision."""
    from detst import report_plots as P
    from detst.runfolder import round_dirs

    L = ["# detst run summary", "", "| round | status | slice | teacher | student | in service after | "
         "teacher small recall | student small recall |", "|---|---|---|---|---|---|---|---|"]
    rows, floors, tol = [], {}, None
    for r in round_dirs(run_dir):
        s = _load(r / "report.json")
        if not s or s.get("status") is None:
            continue
        pre = _load(r / "guard_pre.json") or {}
        for v in pre.get("verdict", {}).get("slices", []):
            for rule in v["rules"]:
                if rule["name"] == "floor" and rule["limit"] is not None:
                    floors[v["slice"]] = rule["limit"]
        if (r / "config.yaml").exists():
            import yaml

            tol = (yaml.safe_load((r / "config.yaml").read_text()) or {}).get("guard", {}).get(
                "promotion", {}).get("max_regression", tol)
        for name, m in s["slices"].items():
            served = m["metric"]["student"] if s["status"] == "promoted" else m["metric"]["teacher"]
            if s["round"] == 1 or not any(x["round"] == s["round"] - 1 and x["slice"] == name for x in rows):
                rows.append({"round": s["round"] - 1, "slice": name, "value": m["metric"]["teacher"]})
            rows.append({"round": s["round"], "slice": name, "value": served})
            L.append(f"| {s['round']} | {s['status']} | {name} | {_f(m['metric']['teacher'])} | "
                     f"{_f(m['metric']['student'])} | {_f(served)} | {_f(m['recall_small']['teacher'])} | "
                     f"{_f(m['recall_small']['student'])} |")
    png = P.rounds_plot(rows, floors, tol, run_dir / "summary.png")
    if png is not None:
        L += ["", "![model in service per round](summary.png)"]
    out = run_dir / "summary.md"
    atomic_write_text(out, "\n".join(L) + "\n")
    return out
