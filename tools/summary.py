"""The model table (README, docs/models.md): `python tools/summary.py` prints it as markdown.

Parameters and receptive fields are computed from the models. The scores are measured, not read:
each shipped weight is run on the generated test splits (500 images of unseen glyphs, seed 0) of
both layouts, so the table shows how a model trained on one task fares on the other. Epochs
and training time come from the model cards (`checkpoints/<model>.<tag>.json`).
"""

from __future__ import annotations

import argparse

import torch

from zoo.builder import create_model, list_models
from zoo.data.layouts import LAYOUTS
from zoo.data.m2nist import BACKGROUND, NUM_CLASSES
from zoo.data.splits import test_split
from zoo.inference import predict
from zoo.models.base import count_parameters
from zoo.rf import receptive_field
from zoo.shipped import available_tags, pretrained_card
from zoo.training.metrics import SegmentationMetrics


def digit_miou(model: torch.nn.Module, layout: str, tta: str | None = None) -> float:
    """`model`'s digit mean IoU on `layout`'s generated test split (fp32, whole-split confusion)."""
    images, labels = test_split(layout)
    metrics = SegmentationMetrics(NUM_CLASSES, BACKGROUND)
    predicted = predict(model, images, batch_size=100, tta=tta)
    metrics.update(torch.from_numpy(predicted), torch.from_numpy(labels).long())
    return float(metrics.compute()["digit_miou"])


def model_rows(pattern: str | None = None, evaluate: bool = True) -> list[dict]:
    """One dict per registered model: parameters, receptive field, downsampling, shipped weights.

    Args:
        evaluate: score each shipped weight on both layouts' test splits (`scores[tag][layout]`).
    """
    rows = []
    for name in list_models(pattern):
        model = create_model(name)
        seed_form = create_model(name, in_channels=3, num_classes=10, head="classify")
        cards, scores = {}, {}
        for tag in available_tags(name):
            cards[tag] = pretrained_card(f"{name}.{tag}")
            if evaluate:
                weights = create_model(f"{name}.{tag}", pretrained=True)
                scores[tag] = {layout: digit_miou(weights, layout) for layout in LAYOUTS}
        rows.append(
            {
                "model": name,
                "params": count_parameters(model),
                "params_cifar": count_parameters(seed_form),
                "receptive_field": receptive_field(model).size,
                "output_stride": model.output_stride,
                "downsampling": not model.full_resolution,
                "cards": cards,
                "scores": scores,
            }
        )
    return rows


def first_stage_score(card: dict) -> float | None:
    """Test digit mIoU of the shared comparison recipe: a card's first stage, or its own record of it."""
    t = card.get("training", {})
    if "shared_recipe" in t:  # weights trained by another recipe keep the shared recipe's score
        return t["shared_recipe"]["test"].get("digit_miou")
    first = (t.get("earlier_stages") or [None])[0]
    test = (first or {}).get("test") if first else card.get("metrics")
    return None if not test else test.get("digit_miou")


def training_cost(card: dict) -> tuple[str, str]:
    """(epochs per stage joined by '+', total fit minutes) from a card's training record."""
    t = card.get("training", {})
    stages = [*t.get("earlier_stages", []), t]  # a later stage lists those before it: show the sum
    epochs = "+".join(str(st.get("epochs", "?")) for st in stages)
    secs = [st.get("fit_seconds") for st in stages]
    return epochs, f"{sum(secs) / 60:.1f} min" if all(secs) else "?"


def markdown(rows: list[dict]) -> str:
    """Render `model_rows()` as a markdown table."""
    lines = [
        "| model | params (M2NIST) | params (CIFAR form) | receptive field | downsampling "
        "| shared recipe: m2nist test | shipped: m2nist test | same weights on scatter "
        "| `.scatter` weights on scatter | epochs | train time (2-core CPU) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        down = f"yes (stride {r['output_stride']})" if r["downsampling"] else "no"
        scores, card = r["scores"], r["cards"].get("m2nist")
        m2nist = scores.get("m2nist", {})
        first = first_stage_score(card) if card else None
        cells = [
            f"{first:.3f}" if first is not None else "",
            f"{m2nist['m2nist']:.3f}" if m2nist else "not trained here",
            f"{m2nist['scatter']:.3f}" if m2nist else "",
            f"{scores['scatter']['scatter']:.3f}" if "scatter" in scores else "",
            *(training_cost(card) if card else ("", "")),
        ]
        lines.append(
            f"| `{r['model']}` | {r['params']:,} | {r['params_cifar']:,} | {r['receptive_field']} | {down} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def tta_table(pattern: str | None = None, layout: str = "m2nist") -> str:
    """Markdown: each shipped `.m2nist` weight's test digit mIoU without and with flip TTA."""
    lines = ["| model | plain | flip TTA | change |", "|---|---:|---:|---:|"]
    for name in list_models(pattern, pretrained=True):
        model = create_model(name, pretrained=True)
        plain, flip = digit_miou(model, layout), digit_miou(model, layout, tta="flip")
        lines.append(f"| `{name}` | {plain:.3f} | {flip:.3f} | {flip - plain:+.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'vgg4_*'")
    parser.add_argument("--tta", action="store_true", help="instead: scores without and with flip TTA")
    args = parser.parse_args(argv)
    print(tta_table(args.pattern) if args.tta else markdown(model_rows(args.pattern)))


if __name__ == "__main__":
    main()
