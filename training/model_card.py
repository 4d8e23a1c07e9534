"""The exported model's README.md: the template `model_card.md` filled in from the run.

Everything on the card comes from the run directory and the training result: hyperparameters,
steps, wall time, the presets' attribution, `evaluation.json` if the run has been evaluated,
the latest probe grid and the loss curves (both copied next to the card).
"""
from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from huggingface_hub import ModelCardData

from stylegan.presets import Preset

from . import reports
from .config import TrainConfig

if TYPE_CHECKING:
    from .trainer import TrainResult

# The repository's model_card.md, installed with this package (training/model_card.md links to it).
TEMPLATE = resources.files("training") / "model_card.md"
CARD_FILE = "README.md"
SAMPLE_GRID_FILE = "sample_grid.png"
LOSSES_FILE = "losses.png"
EVALUATION_FILE = "evaluation.json"
LIBRARY_NAME = "archive-style-gan"
TAGS = ["style-transfer", "gan", "image-to-image", "archives", "pytorch_model_hub_mixin"]


def write_model_card(out_dir: Path, result: TrainResult, config: TrainConfig, run_dir: Path,
                     presets: list[Preset], *, datasets: Sequence[str] = ()) -> Path:
    """Render `model_card.md` into `out_dir/README.md`; copy the sample grid and loss curves beside it.

    `datasets` are Hub dataset ids for the front matter; the card never invents them.
    """
    if not TEMPLATE.is_file():
        raise FileNotFoundError(f"model card template {TEMPLATE} is missing")
    out_dir, run_dir = Path(out_dir), Path(run_dir)
    evaluation = read_evaluation(run_dir / EVALUATION_FILE)
    card_data = ModelCardData(license="mit", library_name=LIBRARY_NAME, pipeline_tag="image-to-image",
                              tags=list(TAGS), datasets=list(datasets) or None,
                              metrics=_metric_names(evaluation) or None)
    generator = result.export_generator
    text = Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        card_data=card_data.to_yaml(),
        num_presets=len(presets),
        num_styles=len(result.style_bank.paths),
        example_preset=presets[0].name if presets else "<preset>",
        steps=result.step,
        crop_size=config.crop_size,
        batch_size=config.batch_size,
        presets_table=presets_table(presets),
        content_note=_content_note(result),
        num_skipped=len(result.skipped),
        wall_time=format_duration(result.wall_seconds),
        device=result.device,
        lineage=lineage_note(result.initialized_from),
        adversarial_loss=config.adversarial_loss,
        num_parameters=f"{sum(p.numel() for p in generator.parameters()):,}",
        config_json=config.to_json(),
        losses_section=_losses_section(run_dir, out_dir),
        evaluation_section=evaluation_section(evaluation),
        samples_section=_samples_section(run_dir, out_dir),
    )
    path = out_dir / CARD_FILE
    path.write_text(text, encoding="utf-8")
    return path


def read_evaluation(path: Path) -> dict | None:
    """`evaluation.json` as written by the evaluation, or None when the run has not been evaluated."""
    if not path.exists():
        return None
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(values).__name__}")  # noqa: TRY004 (bad file content)
    return values


def _flatten(values: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flatten(value, name + " / ")
        else:
            rows.append((name, value))
    return rows


REPORT_METRICS = ("gram_gain", "ssim")  # per method in a `python -m benchmarks.evaluate --out` report


def _is_evaluate_report(evaluation: dict) -> bool:
    methods = evaluation.get("methods")
    return isinstance(methods, dict) and bool(methods) and all(
        isinstance(result, dict) and set(REPORT_METRICS) <= set(result) for result in methods.values())


def _metric_names(evaluation: dict | None) -> list[str]:
    """Names of the numeric leaves of `evaluation.json` (the last key of each path), in order;
    for a `benchmarks.evaluate` report, its two metrics."""
    if evaluation is None:
        return []
    if _is_evaluate_report(evaluation):
        return list(REPORT_METRICS)
    names = [name.rsplit(" / ", 1)[-1] for name, value in _flatten(evaluation)
             if isinstance(value, (int, float)) and not isinstance(value, bool)]
    return list(dict.fromkeys(names))


def _cell(value: object) -> str:
    """A Markdown table cell: no pipes or line breaks from the data break the table."""
    if isinstance(value, float):
        text = f"{value:.4g}" if math.isfinite(value) else str(value)
    elif isinstance(value, (list, tuple)):
        text = json.dumps(value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ").strip() or "-"


def presets_table(presets: list[Preset]) -> str:
    if not presets:
        return "No presets were exported."
    lines = ["| preset | title | artist | year | source | licence |", "| --- | --- | --- | --- | --- | --- |"]
    for preset in presets:
        lines.append("| " + " | ".join(_cell(value) for value in (f"`{preset.name}`", preset.title, preset.artist,
                                                                   preset.year, preset.source, preset.license))
                     + " |")
    return "\n".join(lines)


def evaluation_section(evaluation: dict | None) -> str:
    if evaluation is None:
        return f"Not evaluated yet (no `{EVALUATION_FILE}` in the run directory)."
    if _is_evaluate_report(evaluation):
        return _evaluate_report_section(evaluation)
    rows = _flatten(evaluation)
    if not rows:
        return f"`{EVALUATION_FILE}` is empty."
    lines = [f"From the run's `{EVALUATION_FILE}`:", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {_cell(name)} | {_cell(value)} |" for name, value in rows]
    return "\n".join(lines)


def _evaluate_report_section(report: dict) -> str:
    """The methods table of a `python -m benchmarks.evaluate --out` report, with how it was measured."""
    system = report.get("system", {})
    how = (f"`python -m benchmarks.evaluate` on the {_cell(report.get('split', 'eval'))} split (never trained on), "
           f"strength {_cell(report.get('strength', 1.0))}, metrics at long side {_cell(report.get('metric_side', '?'))}: "
           "colour distance = sliced Wasserstein-1 distance between the output's and the style's RGB "
           "distributions (64 fixed directions, long side 256); style identified = share of outputs whose "
           "nearest style by VGG19 Gram distance (relu1_1-relu5_1) is the one used; Gram gain = log10 of the "
           "Gram distance to the style before (the content) over after (the output); SSIM of luminance "
           f"between output and content. Measured on {_cell(system.get('cpu', '?'))}, "
           f"{_cell(system.get('threads', '?'))} thread(s), torch {_cell(system.get('torch', '?'))}.")
    if "texture_side" in report:
        side = report["texture_side"]
        how += (f" Ours ran through `Stylizer.stylize` with texture side {_cell(side)}" if side else
                " Ours ran through `Stylizer.stylize` at full resolution (texture side None)") + "."
    lines = [how, "", "| method | colour distance ↓ | style identified ↑ | Gram gain ↑ | SSIM (Y) ↑ | pairs | s / image |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for method, result in report["methods"].items():
        lines.append("| " + " | ".join(_cell(value) for value in (
            method, result.get("colour_distance", "-"), result.get("style_identified", "-"), result["gram_gain"],
            result["ssim"], result.get("n_pairs", "?"), result.get("seconds_per_image", "?"))) + " |")
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def lineage_note(initialized_from: dict | None) -> str:
    """One line per earlier run this model continues (fine-tuning chain), newest first."""
    lines, record = [], initialized_from
    while record:
        model = Path(record["model"])  # a folder's name, not the machine's path ("run/export" for exports)
        label = f"{model.parent.name}/{model.name}" if model.name == "export" else model.name
        if "steps" in record:
            lines.append(f"- Started from `{label}`: {record['steps']} steps on "
                         f"{record.get('crop_size', '?')}-px crops, batch {record.get('batch_size', '?')}, "
                         f"{format_duration(record.get('wall_seconds', 0.0))} on {record.get('device', 'an unrecorded device')}.")
        else:
            lines.append(f"- Started from `{label}` (no training record).")
        record = record.get("initialized_from")
    return "\n".join(lines) if lines else "- Trained from scratch (random initialisation)."


def _content_note(result: TrainResult) -> str:
    probes = ", ".join(f"`{path.name}`" for path in result.probe_contents)
    held_out = f" The probe images in the sample grid ({probes}) were held out from training." if probes else ""
    return f"the images of the run's content folder, as random crops at several scales.{held_out}"


def _samples_section(run_dir: Path, out_dir: Path) -> str:
    """Copy the latest probe grid (`run_dir/samples/step-*.png`) next to the card."""
    grids = sorted((run_dir / "samples").glob("step-*.png"))
    (out_dir / SAMPLE_GRID_FILE).unlink(missing_ok=True)  # never a stale grid from an earlier export
    if not grids:
        return "No sample grid was rendered for this run."
    shutil.copyfile(grids[-1], out_dir / SAMPLE_GRID_FILE)
    step = grids[-1].stem.removeprefix("step-").lstrip("0") or "0"
    return (f"![Probe grid at step {step}]({SAMPLE_GRID_FILE})\n\n"
            "First row: the style images. Then one row per held-out content image: the content, then "
            "the content stylised with each style at strength 1.")


def _losses_section(run_dir: Path, out_dir: Path) -> str:
    """Loss curves: the run's `losses.png`, or drawn from `metrics.jsonl` if there is none yet."""
    source = run_dir / LOSSES_FILE
    (out_dir / LOSSES_FILE).unlink(missing_ok=True)
    if source.exists():
        shutil.copyfile(source, out_dir / LOSSES_FILE)
    else:
        reports.plot_losses(run_dir / "metrics.jsonl", out_dir / LOSSES_FILE)
    if not (out_dir / LOSSES_FILE).exists():
        return "No losses were logged for this run."
    return f"![Training losses per step, log scale]({LOSSES_FILE})"
