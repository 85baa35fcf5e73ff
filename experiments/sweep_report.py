"""A sweep's results: DIR/results.csv, DIR/results.md and DIR/results.png (eval metrics
against each swept value)."""

from __future__ import annotations

import csv
import io

from fields import paths
from training.metrics_log import read_records

# Columns after the swept values, when any member has them.
METRICS = ("step", "train/loss", "eval/loss", "eval/accuracy", "heldout/accuracy",
           "train_seconds")


def final_metrics(model_dir: str) -> dict:
    """The last logged train and eval metrics of a run (training/metrics_log.py)."""
    out = {}
    for record in read_records(model_dir):
        if "eval/loss" in record:
            out.update({k: v for k, v in record.items() if k.startswith("eval/")})
        elif "loss" in record:
            out["step"], out["train/loss"] = record["step"], record["loss"]
            if "accuracy" in record:
                out["train/accuracy"] = record["accuracy"]
    return out


def columns(swept: list[str], results: list[dict]) -> list[str]:
    present = {k for r in results for k in r["metrics"]}
    extra = sorted(k for k in present if k.startswith("heldout/") and k != "heldout/accuracy")
    return ["member"] + swept + [m for m in METRICS if m in present] + extra


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def rows(swept: list[str], results: list[dict]) -> list[list[str]]:
    cols = columns(swept, results)
    out = []
    for r in results:
        values = {"member": r["member"], **r["bindings"], **r["metrics"]}
        out.append([_cell(values.get(c)) for c in cols])
    return out


def write_csv(path: str, swept: list[str], results: list[dict]) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns(swept, results))
    writer.writerows(rows(swept, results))
    paths.write_text(path, text.getvalue())


def markdown(swept: list[str], results: list[dict]) -> str:
    cols = columns(swept, results)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(swept, results)]
    return "\n".join(lines)


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _groups(results: list[dict], others: list[str]) -> dict[str, list[dict]]:
    """Members grouped by their values of the other swept keys (a legend label each)."""
    out: dict[str, list[dict]] = {}
    for r in results:
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(r['bindings'].get(k))}"
                          for k in others)
        out.setdefault(label, []).append(r)
    return out


def _short(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plot(path: str, swept: list[str], results: list[dict]) -> None:
    """One panel per swept key: eval metrics (y) against its values (x), one point per
    member, joined (and labelled) by the values of the other swept keys; non-numeric values
    (dicts, names) are placed at evenly spaced ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("eval/loss", "eval/accuracy", "heldout/accuracy")
               if any(m in r["metrics"] for r in results)]
    fig, axes = plt.subplots(len(metrics) or 1, len(swept) or 1, squeeze=False,
                             figsize=(4 * max(len(swept), 1), 3 * max(len(metrics), 1)))
    for j, key in enumerate(swept):
        values = [r["bindings"].get(key) for r in results]
        numeric = all(_numeric(v) for v in values)
        labels = sorted({repr(v) for v in values})
        xs = values if numeric else [labels.index(repr(v)) for v in values]
        x_of = {id(r): x for r, x in zip(results, xs, strict=True)}
        groups = _groups(results, [k for k in swept if k != key])
        for i, metric in enumerate(metrics):
            ax = axes[i][j]
            for label, members in groups.items():
                members = sorted(members, key=lambda r: x_of[id(r)])
                ax.plot([x_of[id(r)] for r in members],
                        [r["metrics"].get(metric, float("nan")) for r in members],
                        marker="o", label=label or None)
            if len(groups) > 1:
                ax.legend(fontsize=7)
            if numeric:
                if all(v > 0 for v in values) and max(values) / min(values) >= 10:
                    ax.set_xscale("log")
                ticks = sorted(set(values))
                ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
                ax.minorticks_off()
            else:
                ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
            ax.set_xlabel(key.rsplit(".", 1)[-1])
            ax.set_ylabel(metric)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=80)
    plt.close(fig)
    paths.write_bytes(path, png.getvalue())


def write_all(out: str, swept: list[str], results: list[dict]) -> str:
    write_csv(paths.join(out, "results.csv"), swept, results)
    md = markdown(swept, results)
    paths.write_text(paths.join(out, "results.md"), md + "\n")
    plot(paths.join(out, "results.png"), swept, results)
    return md
