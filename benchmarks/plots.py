"""Figures of the benchmark tables, for the documentation.

```
python -m benchmarks.plots [--out docs/img]
```

Draws, with matplotlib (Agg backend, no display needed), one PNG per
table of the README's "Benchmarks" section into `--out`:

- `step_time_ratio.png`: `JointModel.fit` steps per second over the
  functional model's, per backend and size, at `steps_per_execution` 1 and
  32 (2-core CPU and H200), with lines at 1.0 and at the 0.97 target.
- `shared_trunk_ratio.png`: the same ratio for keras.io's multi-task set-up
  (a trunk submodel read by two heads, against a two-output functional
  model).
- `weighting_step_time.png`: each weighting strategy's step time relative
  to fixed weighting, per backend, device and number of tasks K (a heatmap).
- `combine_step.png`: the combine step of the gradient-level strategies, in
  ms per call (a heatmap).

Nothing is measured here: the numbers are copied from the README's tables
(themselves from `benchmarks/results/`), as the tables' text below, and
the figures are drawn from that copy. When a benchmark is run again, update
the README's table and its copy here together.
"""

# ruff: noqa: E501 (the tables below are copied verbatim, one row a line)

import argparse
import math
import os

# `make bench` and `benchmarks.step_time`: steps per second, joint / functional
# at spe 1 / 32 (PyTorch: spe 1 only). 2-core CPU, then one NVIDIA H200.
STEP_TIME_RATIOS = {
    "2-core CPU": {
        ("TensorFlow", "small"): (1.00, 0.93),
        ("TensorFlow", "large"): (1.10, 0.81),
        ("JAX", "small"): (0.95, 0.95),
        ("JAX", "large"): (1.06, 0.99),
        ("PyTorch", "small"): (1.04, None),
        ("PyTorch", "large"): (0.99, None),
    },
    "NVIDIA H200": {
        ("JAX", "small"): (0.92, 0.82),
        ("JAX", "large"): (1.04, 0.86),
        ("PyTorch", "small"): (0.99, None),
        ("PyTorch", "large"): (1.21, None),
    },
}

# `benchmarks.shared_trunk`: joint / functional at spe 1 / 16 (PyTorch: 1).
SHARED_TRUNK_RATIOS = {
    "2-core CPU": {
        "TensorFlow": (0.97, 1.02),
        "JAX": (0.98, 1.01),
        "PyTorch": (0.91, None),
    },
    "NVIDIA H200": {
        "JAX": (0.97, 1.13),
        "PyTorch": (0.99, None),
    },
}

# `benchmarks.weighting_step_time`: the README's table, as printed there.
# The first row is fixed weighting's step time in ms; the others, each
# strategy's step time over fixed weighting's.
WEIGHTING_TABLE = """
| strategy | TF K=2 | TF K=4 | TF K=8 | JAX K=2 | JAX K=4 | JAX K=8 | torch K=2 | torch K=4 | torch K=8 | H200 JAX K=2 | H200 JAX K=8 | H200 torch K=2 | H200 torch K=8 |
| fixed (ms) | 2.61 | 2.70 | 3.31 | 0.66 | 0.94 | 1.60 | 3.17 | 5.24 | 10.02 | 1.17 | 2.71 | 6.36 | 26.49 |
| uncertainty | 0.68x | 0.83x | 1.59x | 1.11x | 1.24x | 0.99x | 1.09x | 1.03x | 1.03x | 1.27x | 1.44x | 1.20x | 1.07x |
| dwa | 0.67x | 0.84x | 1.01x | 1.04x | 1.29x | 0.99x | 1.10x | 1.07x | 1.07x | 1.38x | 1.51x | 1.42x | 1.20x |
| rlw | 0.67x | 1.00x | 1.60x | 1.00x | 1.23x | 0.96x | 1.08x | 1.04x | 1.03x | 1.09x | 1.50x | 1.09x | 1.11x |
| famo | 0.63x | 0.87x | 0.94x | 0.98x | 1.20x | 0.96x | 1.22x | 1.31x | 1.15x | 1.38x | 1.56x | 1.78x | 1.23x |
| gradnorm | 0.87x | 1.79x | 6.13x | 1.97x | 3.82x | 7.02x | 1.74x | 2.57x | 3.21x | 1.63x | 3.31x | 2.37x | 1.52x |
| pcgrad | 1.01x | 1.75x | 6.15x | 1.88x | 3.89x | 7.01x | 1.77x | 2.53x | 3.22x | 1.44x | 2.74x | 1.81x | 1.31x |
| graddrop | 1.16x | 3.81x | 6.15x | 3.35x | 6.30x | 11.45x | 2.04x | 2.44x | 3.50x | 1.50x | 3.02x | 2.11x | 1.78x |
| mgda | 1.01x | 1.98x | 3.94x | 1.96x | 3.70x | 7.17x | 1.74x | 2.41x | 3.33x | 1.48x | 2.67x | 2.01x | 1.20x |
| upgrad | 0.96x | 2.05x | 6.16x | 1.99x | 3.41x | 7.13x | 1.77x | 2.75x | 3.35x | 1.39x | 3.24x | 2.08x | 1.11x |
| dualproj | 0.92x | 3.79x | 4.19x | 2.32x | 3.45x | 7.25x | 1.82x | 3.38x | 3.85x | 1.64x | 3.26x | 1.95x | 1.59x |
| cagrad | 0.96x | 2.03x | 4.12x | 2.42x | 3.66x | 6.85x | 1.80x | 6.79x | 4.02x | 1.50x | 3.07x | 2.05x | 1.28x |
| imtlg | 0.85x | 1.88x | 3.81x | 2.80x | 3.96x | 7.37x | 1.68x | 2.68x | 3.90x | 1.65x | 2.93x | 1.61x | 1.46x |
| aligned_mtl | 0.84x | 1.97x | 3.99x | 2.79x | 3.84x | 6.62x | 1.65x | 8.80x | 3.88x | 1.84x | 3.08x | 1.81x | 1.59x |
| config | 0.91x | 1.97x | 3.86x | 2.34x | 3.88x | 6.81x | 1.70x | 2.59x | 3.87x | 1.67x | 3.02x | 3.33x | 1.61x |
| gradvac | 1.01x | 1.91x | 3.91x | 1.91x | 4.55x | 6.91x | 1.86x | 2.44x | 4.01x | 1.38x | 2.75x | 1.87x | 1.72x |
| nash_mtl | 0.98x | 1.94x | 3.70x | 2.18x | 4.33x | 6.88x | 1.82x | 2.45x | 3.97x | 1.93x | 2.48x | 2.25x | 1.46x |
| fairgrad | 0.95x | 2.02x | 3.96x | 2.06x | 4.20x | 7.43x | 1.79x | 2.41x | 3.94x | 2.03x | 2.71x | 2.21x | 1.55x |
| dbmtl | 1.01x | 1.73x | 4.11x | 1.88x | 4.29x | 6.68x | 1.79x | 2.33x | 4.07x | 1.40x | 3.05x | 1.69x | 1.65x |
| mgda/vectorized | 1.10x | 2.29x | 4.67x | 2.89x | 5.75x | 16.62x | 1.87x | 2.38x | 4.07x | 1.66x | 2.76x | 1.73x | 1.87x |
| mgda/sequential | 0.94x | 1.84x | 4.08x | 2.38x | 3.86x | 7.03x | 1.73x | 2.28x | 3.94x | 1.44x | 2.65x | 2.16x | 1.96x |
| pcgrad@trunk | 0.79x | 0.92x | 1.50x | 1.33x | 1.14x | 1.36x | 1.51x | 1.64x | 1.85x | 1.31x | 2.72x | - | - |
| mgda@trunk | 0.73x | 0.95x | 1.56x | 1.21x | 1.19x | 1.58x | 1.57x | 1.67x | 1.96x | 1.46x | 2.57x | 1.90x | 1.56x |
| upgrad@trunk | 1.02x | 0.99x | 1.73x | 0.96x | 1.22x | 1.59x | 1.59x | 1.69x | 2.00x | 1.38x | 2.71x | 1.91x | 2.12x |
| mgda@trunk/vectorized | 0.77x | 0.99x | 1.59x | 1.31x | 1.06x | 1.57x | 1.53x | 1.68x | 1.91x | 1.48x | 2.83x | - | - |
| mgda@trunk/sequential | 0.81x | 1.11x | 3.11x | 1.27x | 1.27x | 1.68x | 1.53x | 1.74x | 2.18x | 1.42x | 2.61x | - | - |
"""

# `benchmarks.combine_step`: the README's table, ms per call (median).
COMBINE_TABLE = """
| strategy | TF K=2 | TF K=8 | JAX K=2 | JAX K=8 | torch K=2 | torch K=8 | H200 JAX K=2 | H200 JAX K=8 | H200 torch K=2 | H200 torch K=8 |
| call overhead | 0.172 | 0.172 | 0.005 | 0.005 | 0.001 | 0.001 | 0.059 | 0.074 | 0.006 | 0.006 |
| pcgrad | 0.217 | 0.303 | 0.011 | 0.096 | 0.208 | 0.329 | 0.097 | 0.129 | 0.912 | 1.535 |
| graddrop | 0.207 | 0.218 | 0.069 | 0.110 | 0.142 | 0.170 | 0.100 | 0.076 | 0.522 | 0.561 |
| mgda | 0.300 | 0.699 | 0.011 | 0.254 | 0.249 | 0.518 | 0.164 | 0.276 | 1.183 | 1.371 |
| upgrad | 0.365 | 0.837 | 0.038 | 0.250 | 0.415 | 0.837 | 0.216 | 0.271 | 1.830 | 1.906 |
| dualproj | 0.355 | 0.673 | 0.011 | 0.202 | 0.402 | 0.642 | 0.182 | 0.255 | 1.784 | 1.923 |
| cagrad | 0.373 | 0.930 | 0.039 | 0.334 | 0.492 | 0.830 | 0.274 | 0.215 | 2.484 | 2.552 |
| imtlg | 0.181 | 0.191 | 0.008 | 0.081 | 0.134 | 0.141 | 0.251 | 0.441 | 0.826 | 0.837 |
| aligned_mtl | 0.182 | 0.188 | 0.007 | 0.011 | 0.115 | 0.117 | 0.216 | 0.477 | 0.639 | 0.642 |
| config | 0.183 | 0.188 | 0.008 | 0.072 | 0.133 | 0.143 | 0.258 | 0.458 | 1.180 | 0.864 |
| gradvac | 0.241 | 0.375 | 0.013 | 0.101 | 0.497 | 0.883 | 0.087 | 0.148 | 2.116 | 3.785 |
| nash_mtl | 0.302 | 0.307 | 0.014 | 0.057 | 0.570 | 0.580 | 0.959 | 1.043 | 3.536 | 3.770 |
| fairgrad | 0.303 | 0.304 | 0.014 | 0.043 | 0.574 | 0.584 | 1.263 | 1.076 | 3.600 | 3.617 |
| dbmtl | 0.207 | 0.198 | 0.010 | 0.010 | 0.363 | 0.438 | 0.081 | 0.074 | 0.939 | 1.166 |
"""

DPI = 100
TARGET = 0.97  # the README's target: joint at least 0.97 of functional
SPE_COLORS = ("#4c72b0", "#dd8452")


def parse_table(text):
    """`(columns, rows)` of a Markdown table given without its `|---|` line:
    the column names after the first, and `(name, values)` per row, each
    value a float (`"1.01x"` is 1.01) or None (`"-"`)."""
    lines = [line.strip().strip("|") for line in text.strip().splitlines()]
    cells = [[cell.strip() for cell in line.split("|")] for line in lines]
    columns = cells[0][1:]
    rows = []
    for row in cells[1:]:
        values = [None if v == "-" else float(v.rstrip("x")) for v in row[1:]]
        if len(values) != len(columns):
            raise ValueError(f"Row {row[0]!r} has {len(values)} values.")
        rows.append((row[0], values))
    return columns, rows


def _save(fig, path):
    """Saves `fig` as a PNG of at most 256 colours (a palette PNG is a
    fraction of the size, and these figures have few colours)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    image = Image.open(buffer).convert("RGB")
    image.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _reference_lines(ax):
    ax.axhline(1.0, color="black", linewidth=1.0, label="1.0: as fast")
    ax.axhline(
        TARGET, color="gray", linewidth=1.0, linestyle="--", label="0.97: target"
    )


def _ratio_bars(ax, groups, labels, title, ylim):
    """Two bars (two spe values) per group; a missing value draws no bar,
    and a group with one value has its bar centred."""
    width = 0.38
    labelled = set()
    for g, values in enumerate(groups.values()):
        present = [i for i, value in enumerate(values) if value is not None]
        for i in present:
            offset = 0.0 if len(present) == 1 else (i - 0.5) * width
            x, value = g + offset, values[i]
            label = labels[i] if i not in labelled else None
            labelled.add(i)
            ax.bar(x, value, width, color=SPE_COLORS[i], label=label)
            ax.annotate(
                f"{value:.2f}",
                (x, value),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
    names = [key if isinstance(key, str) else "\n".join(key) for key in groups]
    ax.set_xticks(range(len(groups)), names, fontsize=9)
    ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=11)
    _reference_lines(ax)


def _ratio_figure(data, labels, suptitle, path):
    plt = _pyplot()
    widths = [len(groups) for groups in data.values()]
    fig, axes = plt.subplots(
        1,
        len(data),
        figsize=(11, 4.2),
        sharey=True,
        gridspec_kw={"width_ratios": widths},
    )
    for ax, (device, groups) in zip(axes, data.items()):
        _ratio_bars(ax, groups, labels, device, (0.6, 1.3))
    axes[0].set_ylabel("joint / functional steps per second")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper right", ncol=4, fontsize=9, frameon=False)
    fig.suptitle(suptitle, x=0.01, ha="left", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    _save(fig, path)
    plt.close(fig)


def step_time_figure(path):
    _ratio_figure(
        STEP_TIME_RATIOS,
        ("spe 1", "spe 32"),
        "JointModel.fit against a functional model (higher is faster)",
        path,
    )


def shared_trunk_figure(path):
    _ratio_figure(
        SHARED_TRUNK_RATIOS,
        ("spe 1", "spe 16"),
        "A shared trunk: submodel graph against a functional model",
        path,
    )


def _heatmap(columns, rows, title, colorbar_label, path, fmt, norm_range, size):
    import numpy as np
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    values = np.array([[np.nan if v is None else v for v in vs] for _, vs in rows])
    fig, ax = plt.subplots(figsize=size)
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("#dddddd")
    image = ax.imshow(
        np.ma.masked_invalid(values),
        cmap=cmap,
        norm=LogNorm(*norm_range),
        aspect="auto",
    )
    middle = math.sqrt(norm_range[0] * norm_range[1])
    for (r, c), value in np.ndenumerate(values):
        text = "-" if math.isnan(value) else fmt.format(value)
        dark = math.isnan(value) or value > middle
        ax.text(
            c,
            r,
            text,
            ha="center",
            va="center",
            fontsize=7,
            color="black" if dark else "white",
        )
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    ax.set_title(title, fontsize=10, loc="left", pad=10)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    colorbar.set_label(colorbar_label, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _column(name):
    """A table column's name on three lines: device and backend, then K."""
    *where, k = name.replace("torch", "PyTorch").split()
    device = "H200" if where[0] == "H200" else "CPU"
    return f"{device}\n{where[-1]}\n{k}"


def weighting_figure(path):
    columns, rows = parse_table(WEIGHTING_TABLE)
    fixed = dict(rows)["fixed (ms)"]
    columns = [f"{_column(name)}\n{ms:.2f} ms" for name, ms in zip(columns, fixed)]
    _heatmap(
        columns,
        [(name, values) for name, values in rows if name != "fixed (ms)"],
        "Weighting strategies: step time relative to fixed weighting "
        "(under each column: fixed weighting's step time)",
        "step time / fixed weighting's (log scale)",
        path,
        "{:.2f}",
        (0.5, 17.0),
        (11, 8.5),
    )


def combine_figure(path):
    columns, rows = parse_table(COMBINE_TABLE)
    _heatmap(
        [_column(name) for name in columns],
        rows,
        "The combine step of gradient-level strategies, ms per call (median)",
        "ms per call (log scale)",
        path,
        "{:.3f}",
        (0.001, 4.0),
        (9, 5.5),
    )


FIGURES = {
    "step_time_ratio.png": step_time_figure,
    "shared_trunk_ratio.png": shared_trunk_figure,
    "weighting_step_time.png": weighting_figure,
    "combine_step.png": combine_figure,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("docs", "img"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    written = []
    for name, draw in FIGURES.items():
        path = os.path.join(args.out, name)
        draw(path)
        written.append(path)
        print(f"{path}: {os.path.getsize(path) / 1024:.0f} KB")
    return written


if __name__ == "__main__":
    main()
