"""The model table of the README: `python -m zoo.summary` prints it as markdown.

Parameters and receptive fields are computed from the models; the test metrics, epochs and
training time are read from the shipped model cards (`checkpoints/<model>.m2nist.json`).
"""

from __future__ import annotations

import argparse

from zoo.hub import has_pretrained, pretrained_card
from zoo.registry import create_model, list_models
from zoo.rf import receptive_field


def count_parameters(model) -> int:
    """Trainable parameters (weights, biases, BN gamma/beta)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_rows(pattern: str | None = None) -> list[dict]:
    """One dict per registered model: parameters, receptive field, downsampling."""
    rows = []
    for name in list_models(pattern):
        model = create_model(name)
        seed_form = create_model(name, in_channels=3, num_classes=10, head="classify")
        rows.append(
            {
                "model": name,
                "params": count_parameters(model),
                "params_cifar": count_parameters(seed_form),
                "receptive_field": receptive_field(model).size,
                "output_stride": model.output_stride,
                "downsampling": not model.full_resolution,
                "card": pretrained_card(name) if has_pretrained(name) else None,
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    """Render `model_rows()` as a markdown table."""
    lines = [
        "| model | params (M2NIST) | params (CIFAR form) | receptive field | downsampling "
        "| test digit mIoU | test mIoU | pixel acc | epochs | train time (2-core CPU) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        down = f"yes (stride {r['output_stride']})" if r["downsampling"] else "no"
        card = r["card"]
        if card and card.get("metrics"):
            m, t = card["metrics"], card.get("training", {})
            stages = [*t.get("earlier_stages", []), t]  # a second stage lists the first: show the sum
            epochs = "+".join(str(st.get("epochs", "?")) for st in stages)
            secs = [st.get("fit_seconds") for st in stages]
            took = f"{sum(secs) / 60:.1f} min" if all(secs) else "?"
            measured = f"{m['digit_miou']:.3f} | {m['miou']:.3f} | {m['pixel_acc']:.4f} | {epochs} | {took}"
        else:
            measured = "not trained here | | | |"
        lines.append(
            f"| `{r['model']}` | {r['params']:,} | {r['params_cifar']:,} | {r['receptive_field']} | {down} | {measured} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'vgg4_*'")
    print(markdown(model_rows(parser.parse_args(argv).pattern)))


if __name__ == "__main__":
    main()
