"""Figures of the population analysis (DT Fig. 2-4), from DataFrames and arrays; no database.

Each ``fig_*`` function returns a :class:`matplotlib.figure.Figure` (made without pyplot, so
nothing accumulates in a global figure registry; in a notebook ``display(fig)`` shows it), or
``None`` when its input is absent. :func:`write_report` saves them all as PNGs with an
``index.html``. :mod:`v1twin.export` fetches the inputs from the database.

Inputs:
- ``neurons``: one row per neuron with ``scan, unit_id, cluster, test_corr``, the tuning indices
  (:data:`insilico.population.INDICES`) and, for t-SNE panels, ``tsne_x, tsne_y``.
- ``clustering``: dict with ``heldout_k, heldout_ll`` (K,), ``confusion`` (k, k), ``block`` (k,),
  ``block_order`` (k,), optionally ``n_clusters``.
- ``curves``: xarray Dataset with dim ``neuron`` (coords ``scan, unit_id, cluster``) and variables
  ``orientation_tuning`` (neuron, orientation), ``phase_tuning`` (neuron, phase),
  ``size_contrast_tuning`` (neuron, contrast, size), ``plaid_tuning`` (neuron, optimal_contrast,
  orthogonal_contrast), ``stimulus_comparison`` (neuron, stimulus, energy); any may be missing.
- ``meis``: {cluster: [(label, image (H, W)), ...]} MEIs of the best-predicted neurons.
- ``cluster_meis``: {cluster: image (H, W)}; empty or None when the table does not exist yet.
- ``reliability``: DataFrame ``index_name, n_seeds, icc, split_half`` (NaN: unknown, one seed):
  each index's reliability across the twins' seeds (``schemas.analysis.IndexReliability``),
  shown over its histogram; correlations are then also given corrected for attenuation.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

from insilico import population as pop
from insilico import reliability as rel

__all__ = [
    "fig_tsne_clusters",
    "fig_tsne_indices",
    "fig_neuron_meis",
    "fig_cluster_meis",
    "fig_tuning_examples",
    "fig_heldout_likelihood",
    "fig_confusion",
    "fig_index_pairs",
    "fig_combinatorial_code",
    "fig_battery_sources",
    "best_predicted",
    "write_report",
    "FIGURES",
]

LABELS = {
    "orientation_index": "orientation (F2/F0 = 1 - circ. var.)",
    "phase_index": "phase (|F1|/F0, DT Eq. 11 = half textbook F1/F0)",
    "phase_f1f0": "phase (textbook 2|F1|/F0; > 1 simple)",
    "suppression_index": "surround suppression",
    "contrast_index": "contrast",
    "plaid_index": "cross-orientation (plaid)",
    "gabor_vs_dog": "Gabor vs DoG",
    "gabor_vs_mei": "Gabor vs MEI",
    "dog_vs_mei": "DoG vs MEI",
    "nonlinearity_index": "non-linearity (CNN/GLM)",
}
# one colour per combination of (phase, suppression, plaid), by code (bit 0: phase)
CODE_COLOURS = (
    "#444444",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#1f77b4",
    "#9467bd",
    "#17becf",
    "#8c564b",
)


def _cluster_colours(clusters) -> dict:
    from matplotlib import colormaps

    clusters = sorted(set(int(c) for c in clusters))
    cmap = colormaps["tab20"] if len(clusters) > 10 else colormaps["tab10"]
    return {c: cmap(i % cmap.N) for i, c in enumerate(clusters)}


def _has_tsne(neurons: pd.DataFrame) -> bool:
    return {"tsne_x", "tsne_y"} <= set(neurons.columns) and neurons[
        ["tsne_x", "tsne_y"]
    ].notna().all(axis=1).any()


def _indices(neurons: pd.DataFrame, indices=None) -> list[str]:
    """The indices that are columns of `neurons` with at least one finite value."""
    indices = pop.INDICES if indices is None else indices
    return [
        i for i in indices if i in neurons.columns and np.isfinite(neurons[i].to_numpy(float)).any()
    ]


def _message(fig_or_ax, text):
    ax = fig_or_ax.add_subplot() if isinstance(fig_or_ax, Figure) else fig_or_ax
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return ax


def fig_tsne_clusters(neurons: pd.DataFrame) -> Figure | None:
    """t-SNE of the aligned bar codes coloured by cluster, each cluster's centre (median)
    labelled."""
    if not _has_tsne(neurons):
        return None
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.add_subplot()
    colours = _cluster_colours(neurons["cluster"])
    ax.scatter(
        neurons["tsne_x"],
        neurons["tsne_y"],
        s=6,
        c=[colours[int(c)] for c in neurons["cluster"]],
        linewidths=0,
    )
    centres = neurons.groupby("cluster")[["tsne_x", "tsne_y"]].median()
    ax.scatter(centres["tsne_x"], centres["tsne_y"], s=60, c="white", edgecolors="black", zorder=3)
    for c, row in centres.iterrows():
        ax.annotate(
            str(c), (row.tsne_x, row.tsne_y), ha="center", va="center", fontsize=7, zorder=4
        )
    ax.set(title=f"t-SNE of aligned bar codes: {len(centres)} clusters", xticks=[], yticks=[])
    return fig


def _reliability_label(index: str, reliability: pd.DataFrame) -> str:
    """'ICC 0.83, split-half 0.91 (3 seeds)', or why the reliability is unknown."""
    row = reliability.set_index("index_name").reindex([index]).iloc[0]
    if np.isfinite(row["icc"]):
        return (
            f"ICC(3,1) {row['icc']:.2f}, split-half {row['split_half']:.2f} "
            f"({int(row['n_seeds'])} seeds)"
        )
    return "reliability unknown (1 seed)" if row["n_seeds"] == 1 else "reliability not computed"


def fig_tsne_indices(
    neurons: pd.DataFrame, indices=None, ncols: int = 3, reliability: pd.DataFrame | None = None
) -> Figure | None:
    """For each tuning index: the t-SNE coloured by it (1st-99th percentile) over its histogram;
    with ``reliability``, the index's across-seed reliability above the histogram."""
    indices = _indices(neurons, indices)
    if not indices or not _has_tsne(neurons):
        return None
    nrows = -(-len(indices) // ncols)
    fig = Figure(figsize=(4 * ncols, 5 * nrows))
    grid = fig.add_gridspec(
        2 * nrows,
        ncols,
        height_ratios=[3, 1] * nrows,
        left=0.03,
        right=0.97,
        bottom=0.03,
        top=0.97,
        hspace=0.3,
        wspace=0.15,
    )
    for i, index in enumerate(indices):
        r, c = divmod(i, ncols)
        values = neurons[index].to_numpy(float)
        ok = np.isfinite(values)
        lo, hi = np.percentile(values[ok], [1, 99])
        ax = fig.add_subplot(grid[2 * r, c])
        sc = ax.scatter(
            neurons["tsne_x"][ok],
            neurons["tsne_y"][ok],
            c=values[ok],
            s=4,
            cmap="viridis",
            vmin=lo,
            vmax=hi if hi > lo else lo + 1e-6,
            linewidths=0,
        )
        fig.colorbar(sc, ax=ax, shrink=0.8)
        ax.set(title=LABELS.get(index, index), xticks=[], yticks=[])
        hax = fig.add_subplot(grid[2 * r + 1, c])
        hax.hist(values[ok], bins=40, color="0.4")
        hax.axvline(values[ok].mean(), color="red", lw=1)
        hax.set_yticks([])
        if reliability is not None:
            hax.set_title(_reliability_label(index, reliability), fontsize=8)
    return fig


def best_predicted(neurons: pd.DataFrame, n: int = 4, by: str = "test_corr") -> pd.DataFrame:
    """The `n` best-predicted neurons of every cluster (by `by`, descending)."""
    ranked = neurons.sort_values(["cluster", by], ascending=[True, False], na_position="last")
    return ranked.groupby("cluster", sort=True).head(n).reset_index(drop=True)


def _show_image(ax, image, title=None):
    image = np.asarray(image, float)
    lim = np.nanmax(np.abs(image)) or 1.0
    ax.imshow(image, cmap="gray", vmin=-lim, vmax=lim)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def fig_neuron_meis(meis: dict | None) -> Figure | None:
    """MEIs of the best-predicted neurons: one row per cluster."""
    meis = {c: v for c, v in (meis or {}).items() if len(v)}
    if not meis:
        return None
    ncols = max(len(v) for v in meis.values())
    fig = Figure(figsize=(1.6 * ncols + 0.6, 1.1 * len(meis) + 0.6), layout="constrained")
    axes = fig.subplots(len(meis), ncols, squeeze=False)
    for r, (c, items) in enumerate(sorted(meis.items())):
        for j in range(ncols):
            if j < len(items):
                _show_image(axes[r, j], items[j][1], items[j][0])
            else:
                axes[r, j].set_axis_off()
        axes[r, 0].set_ylabel(f"cluster {c}", fontsize=8)
    fig.suptitle("MEIs of the best-predicted neurons per cluster")
    return fig


def fig_cluster_meis(cluster_meis: dict | None, ncols: int = 6) -> Figure | None:
    """One MEI per cluster; None when there are none (e.g. the table is not populated yet)."""
    if not cluster_meis:
        return None
    items = sorted(cluster_meis.items())
    nrows = -(-len(items) // ncols)
    ncols = min(ncols, len(items))
    fig = Figure(figsize=(1.8 * ncols, 1.4 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (c, image) in zip(axes, items):
        _show_image(ax, image, f"cluster {c}")
    for ax in axes[len(items) :]:
        ax.set_axis_off()
    fig.suptitle("Cluster MEIs")
    return fig


_PANELS = (  # variable, title, x dim, line dim (None: a single curve)
    ("orientation_tuning", "orientation", "orientation", None),
    ("phase_tuning", "phase", "phase", None),
    ("size_contrast_tuning", "size x contrast", "size", "contrast"),
    ("plaid_tuning", "plaid", "optimal_contrast", "orthogonal_contrast"),
    ("stimulus_comparison", "Gabor / DoG / MEI", "energy", "stimulus"),
)


def _neuron_positions(curves, neurons: pd.DataFrame) -> list[int]:
    scans = np.asarray(curves["scan"].values).astype(str)
    units = np.asarray(curves["unit_id"].values).astype(np.int64)
    lookup = {(s, int(u)): i for i, (s, u) in enumerate(zip(scans, units))}
    return [lookup.get((str(r.scan), int(r.unit_id)), -1) for r in neurons.itertuples()]


def fig_tuning_examples(
    curves, neurons: pd.DataFrame, n_examples: int = 4, per_cluster: int = 1
) -> Figure | None:
    """Tuning curves of example neurons: the `per_cluster` best-predicted neurons of each of the
    `n_examples` largest clusters. Rows: neurons; columns: the experiments present in `curves`.
    """
    if curves is None or "neuron" not in getattr(curves, "dims", {}):
        return None
    panels = [p for p in _PANELS if p[0] in curves.data_vars]
    if not panels:
        return None
    largest = neurons["cluster"].value_counts().index[:n_examples]
    examples = best_predicted(neurons[neurons["cluster"].isin(largest)], n=per_cluster)
    positions = [p for p in _neuron_positions(curves, examples) if p >= 0]
    if not positions:
        return None
    examples = examples.iloc[
        [i for i, p in enumerate(_neuron_positions(curves, examples)) if p >= 0]
    ]
    fig = Figure(figsize=(3 * len(panels), 2.4 * len(positions) + 0.6))
    axes = fig.subplots(
        len(positions),
        len(panels),
        squeeze=False,
        gridspec_kw=dict(left=0.07, right=0.98, bottom=0.08, top=0.94, hspace=0.35, wspace=0.3),
    )
    for r, (pos, row) in enumerate(zip(positions, examples.itertuples())):
        for j, (var, title, xdim, line) in enumerate(panels):
            ax = axes[r, j]
            da = curves[var].isel(neuron=pos)
            x = da[xdim].values
            if line is None:
                ax.plot(x, da.values, "o-", ms=3)
            else:
                for k, value in enumerate(da[line].values):
                    label = str(value) if line == "stimulus" else f"{float(value):g}"
                    ax.plot(x, da.isel({line: k}).values, "o-", ms=2, label=label)
                if r == 0:
                    ax.legend(fontsize=6, title=line, title_fontsize=6)
            if xdim in ("size", "energy") and np.all(x > 0):
                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(NullFormatter())
            if r == 0:
                ax.set_title(title)
            if r == len(positions) - 1:
                ax.set_xlabel(xdim)
        axes[r, 0].set_ylabel(f"{row.scan} #{row.unit_id}\ncluster {row.cluster}", fontsize=8)
    return fig


def fig_heldout_likelihood(
    heldout_k,
    heldout_ll,
    n_clusters: int | None = None,
    heldout_se=None,
    k_reason=None,
    stability=None,
) -> Figure | None:
    """Held-out GMM log-likelihood per neuron over the number of clusters; the chosen k and
    why (``k_reason``); error bars: the s.e. of each k's difference from the best k; given it,
    the stability of each k (ARI between halves, right axis, with the threshold of
    clustering.mixture.STABLE_ARI)."""
    if heldout_k is None or len(heldout_k) == 0:
        return None
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.errorbar(np.asarray(heldout_k), np.asarray(heldout_ll), yerr=heldout_se, fmt="o-")
    if stability is not None:
        from clustering.mixture import STABLE_ARI

        right = ax.twinx()
        right.plot(np.asarray(heldout_k), np.asarray(stability), "s:", color="tab:green")
        right.axhline(STABLE_ARI, color="tab:green", lw=0.8, alpha=0.5)
        right.set(ylabel="stability (ARI between halves)", ylim=(0, 1.05))
    if n_clusters is not None:
        ax.axvline(n_clusters, color="red", ls="--", lw=1, label=f"chosen k = {n_clusters}")
        ax.legend()
    ax.set(
        xlabel="number of clusters",
        ylabel="held-out log-likelihood / neuron (nats)",
        title="GMM held-out likelihood",
    )
    if k_reason:
        fig.suptitle(f"k: {k_reason}", fontsize=6, wrap=True)
    return fig


def fig_confusion(confusion, block=None, block_order=None) -> Figure | None:
    """Cluster confusion matrix, rows and columns in block order, blocks outlined."""
    if confusion is None:
        return None
    confusion = np.asarray(confusion, float)
    k = len(confusion)
    order = np.arange(k) if block_order is None else np.asarray(block_order, int)
    fig = Figure(figsize=(6, 5.2), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(confusion[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(im, ax=ax, label="correlation")
    ax.set_xticks(range(k), [str(c) for c in order], fontsize=6, rotation=90)
    ax.set_yticks(range(k), [str(c) for c in order], fontsize=6)
    if block is not None:
        blocks = np.asarray(block)[order]
        start = 0
        for i in range(1, k + 1):
            if i == k or blocks[i] != blocks[start]:
                ax.add_patch(
                    Rectangle(
                        (start - 0.5, start - 0.5),
                        i - start,
                        i - start,
                        fill=False,
                        ec="black",
                        lw=1.5,
                    )
                )
                start = i
    ax.set(title="cluster confusion matrix (blocks outlined)", xlabel="cluster", ylabel="cluster")
    return fig


def fig_index_pairs(neurons: pd.DataFrame, indices=None) -> Figure | None:
    """Pairwise scatter of cluster-mean indices (DT Fig. 4A): Gabor-like clusters red, others
    grey; above each panel Spearman r (p) over the Gabor-like clusters (red) and all (black)."""
    indices = _indices(neurons, indices)
    if len(indices) < 2:
        return None
    means = pop.cluster_means(neurons, indices)
    if _indices(neurons, [pop.GATE]):
        gate = pop.population_thresholds(neurons, [pop.GATE])[pop.GATE]
        gabor_like = pop.cluster_means(neurons, [pop.GATE])[pop.GATE].reindex(means.index) > gate
    else:
        gabor_like = pd.Series(False, index=means.index)
    corr_all = pop.index_correlations(means, indices).set_index(["index_a", "index_b"])
    corr_gl = pop.index_correlations(
        means, indices, clusters=means.index[gabor_like.to_numpy()]
    ).set_index(["index_a", "index_b"])
    n = len(indices)
    fig = Figure(
        figsize=(1.9 * (n - 1) + 0.5, 1.9 * (n - 1) + 0.5)
    )  # constrained layout: slow on a big grid
    axes = fig.subplots(
        n - 1,
        n - 1,
        squeeze=False,
        gridspec_kw=dict(left=0.07, right=0.98, bottom=0.06, top=0.93, hspace=0.45, wspace=0.35),
    )
    colours = np.where(gabor_like.to_numpy(), "tab:red", "0.6")
    for i in range(1, n):
        for j in range(n - 1):
            ax = axes[i - 1, j]
            if j >= i:
                ax.set_axis_off()
                continue
            a, b = indices[j], indices[i]
            ax.scatter(means[a], means[b], s=12, c=colours, linewidths=0)
            ra, rg = corr_all.loc[(a, b)], corr_gl.loc[(a, b)]
            if rg.n >= 3:
                ax.set_title(
                    f"{rg.spearman_r:.2f} ({rg.spearman_p:.2g})",
                    fontsize=6,
                    color="tab:red",
                    loc="left",
                )
            ax.set_title(f"{ra.spearman_r:.2f} ({ra.spearman_p:.2g})", fontsize=6, loc="right")
            ax.tick_params(labelsize=5)
            if j == 0:
                ax.set_ylabel(pop._short(b), fontsize=7)
            if i == n - 1:
                ax.set_xlabel(pop._short(a), fontsize=7)
    fig.suptitle("cluster-mean indices; Spearman r (p): Gabor-like (red), all (black)")
    return fig


def fig_combinatorial_code(
    neurons: pd.DataFrame, code: pd.DataFrame | None = None
) -> Figure | None:
    """Combinatorial code (DT Fig. 4C): Gabor-like clusters on the t-SNE coloured by their
    combination of high/low phase, suppression and plaid tuning; and how many clusters show
    each of the eight combinations."""
    needed = set(pop.CODE_PROPERTIES) | {pop.GATE}
    if code is None:
        if not needed <= set(_indices(neurons, needed)):
            return None
        code = pop.combinatorial_code(neurons)
    combos = pop.code_combinations(code)
    tsne = _has_tsne(neurons)
    fig = Figure(figsize=(11 if tsne else 5.5, 4.5), layout="constrained")
    axes = fig.subplots(1, 2 if tsne else 1, squeeze=False)[0]
    if tsne:
        ax = axes[0]
        by_cluster = code.set_index("cluster")
        gl = neurons["cluster"].map(by_cluster["gabor_like"]).fillna(False).to_numpy(bool)
        ax.scatter(neurons["tsne_x"][~gl], neurons["tsne_y"][~gl], s=4, c="0.85", linewidths=0)
        codes = neurons["cluster"].map(by_cluster["code"]).to_numpy()
        ax.scatter(
            neurons["tsne_x"][gl],
            neurons["tsne_y"][gl],
            s=6,
            c=[CODE_COLOURS[int(x)] for x in codes[gl]],
            linewidths=0,
        )
        ax.set(title="Gabor-like clusters by (phase, suppression, plaid)", xticks=[], yticks=[])
    ax = axes[-1]
    ax.bar(range(8), combos["n_clusters"], color=CODE_COLOURS)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xticks(range(8), combos["combination"], rotation=45, ha="right", fontsize=8)
    ax.set(
        ylabel="Gabor-like clusters", title=f"{int(combos['occurs'].sum())} of 8 combinations occur"
    )
    return fig


def fig_battery_sources(battery: pd.DataFrame | None) -> Figure | None:
    """Each battery index at the neuron's own optimal Gabor (x) against the same index at its
    cluster's optimal Gabor (y), one point per neuron, coloured by cluster (``battery``: the
    export's battery.csv, long format with ``gabor_source``)."""
    if battery is None or not (battery["gabor_source"] == "cluster").any():
        return None
    wide = battery.pivot_table(index=["scan", "unit_id", "cluster"], columns="gabor_source")
    names = [
        c
        for c in battery.columns[4:]
        if c in wide and {"neuron", "cluster"} <= set(wide[c].dropna().columns)
    ]
    if not names:
        return None
    fig = Figure(figsize=(3 * len(names), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    clusters = wide.index.get_level_values("cluster")
    colours = _cluster_colours(clusters)
    for ax, name in zip(axes, names):
        x, y = wide[name]["neuron"].to_numpy(), wide[name]["cluster"].to_numpy()
        ax.scatter(x, y, s=6, c=[colours[c] for c in clusters])
        lo, hi = np.nanmin([x.min(), y.min()]), np.nanmax([x.max(), y.max()])
        ax.plot([lo, hi], [lo, hi], "k:", lw=0.8)
        ax.set(title=name, xlabel="at the neuron's optimal Gabor")
    axes[0].set_ylabel("at the cluster's optimal Gabor")
    return fig


#: file stem -> (title, function of the write_report inputs)
FIGURES = {
    "tsne_clusters": ("t-SNE coloured by cluster", lambda d: fig_tsne_clusters(d["neurons"])),
    "tsne_indices": (
        "t-SNE coloured by each tuning index",
        lambda d: fig_tsne_indices(d["neurons"], reliability=d["reliability"]),
    ),
    "neuron_meis": ("MEIs of the best-predicted neurons", lambda d: fig_neuron_meis(d["meis"])),
    "cluster_meis": ("Cluster MEIs", lambda d: fig_cluster_meis(d["cluster_meis"])),
    "tuning_examples": (
        "Example tuning curves",
        lambda d: fig_tuning_examples(d["curves"], d["neurons"]),
    ),
    "heldout_likelihood": (
        "Held-out GMM likelihood",
        lambda d: fig_heldout_likelihood(
            d["clustering"].get("heldout_k"),
            d["clustering"].get("heldout_ll"),
            d["clustering"].get("n_clusters"),
            d["clustering"].get("heldout_se"),
            d["clustering"].get("k_reason"),
            d["clustering"].get("stability"),
        ),
    ),
    "confusion": (
        "Cluster confusion matrix",
        lambda d: fig_confusion(
            d["clustering"].get("confusion"),
            d["clustering"].get("block"),
            d["clustering"].get("block_order"),
        ),
    ),
    "index_pairs": ("Pairwise cluster-mean indices", lambda d: fig_index_pairs(d["neurons"])),
    "combinatorial_code": ("Combinatorial code", lambda d: fig_combinatorial_code(d["neurons"])),
    "battery_sources": (
        "Battery indices at the neuron's (x) vs the cluster's (y) optimal Gabor",
        lambda d: fig_battery_sources(d["battery"]),
    ),
}


def _tables_html(neurons: pd.DataFrame, reliability: pd.DataFrame | None = None) -> str:
    indices = _indices(neurons)
    if not indices:
        return "<p>No tuning indices yet.</p>"
    parts = []
    ks = pop.cluster_ks(neurons, indices)
    summary = pop.ks_summary(ks)
    control = pop.control_ks(neurons, indices, n_repeats=5)
    parts.append(
        f"<h2>KS tests (two-sided, alpha = {pop.ALPHA})</h2><p>{summary['n_any']} of "
        f"{summary['n_clusters']} clusters "
        f"differ from the population on at least one index, {summary['n_all']} on all "
        f"{len(indices)}; "
        f"random cluster assignments: {control['n_any'].mean():.1f} and "
        f"{control['n_all'].mean():.1f} "
        f"(mean of {len(control)}).</p>"
    )
    parts.append(
        ks.pivot(index="cluster", columns="index_name", values="p_value").to_html(
            float_format="%.2g"
        )
    )
    corr = pop.index_correlations(pop.cluster_means(neurons, indices), indices)
    heading = "<h2>Correlations of cluster-mean indices</h2>"
    if reliability is not None:
        parts.append(
            "<h2>Reliability of each index across seeds</h2><p>ICC(3,1): consistency of one "
            "seed's index over neurons; split-half: Spearman-Brown, the mean over all seeds; "
            "empty: unknown (one seed).</p>" + reliability.to_html(index=False, float_format="%.3g")
        )
        icc = reliability.set_index("index_name")["icc"].to_dict()
        corr = rel.corrected_correlations(corr, icc)
        heading += (
            "<p>*_corrected: r / sqrt(ICC_a ICC_b), corrected for attenuation by the "
            "indices' neuron-level reliabilities, clipped to [-1, 1]; empty where unknown.</p>"
        )
    parts.append(heading + corr.to_html(index=False, float_format="%.3g"))
    if set(pop.CODE_PROPERTIES) | {pop.GATE} <= set(indices):
        code = pop.combinatorial_code(neurons)
        parts.append("<h2>Combinatorial code</h2>" + code.to_html(index=False))
    return "\n".join(parts)


def write_report(
    out_dir,
    neurons: pd.DataFrame,
    clustering: dict | None = None,
    curves=None,
    meis: dict | None = None,
    cluster_meis: dict | None = None,
    reliability: pd.DataFrame | None = None,
    battery: pd.DataFrame | None = None,
    dpi: int = 100,
    title: str = "v1twin report",
) -> dict[str, Path]:
    """Save every figure that has its inputs as ``{out_dir}/{name}.png`` and an ``index.html``
    showing them with the KS, correlation and combinatorial-code tables. Returns name -> path
    (``index`` included); panels without inputs are listed as skipped in the HTML."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inputs = dict(
        neurons=neurons,
        clustering=clustering or {},
        curves=curves,
        meis=meis,
        cluster_meis=cluster_meis,
        reliability=reliability,
        battery=battery,
    )
    written, sections = {}, []
    for name, (caption, make) in FIGURES.items():
        fig = make(inputs)
        if fig is None:
            sections.append(f"<h2>{html.escape(caption)}</h2><p><i>skipped: no data</i></p>")
            continue
        path = out / f"{name}.png"
        fig.savefig(path, dpi=dpi)
        written[name] = path
        sections.append(
            f'<h2>{html.escape(caption)}</h2><img src="{path.name}" style="max-width:100%">'
        )
    body = "\n".join(sections) + "\n" + _tables_html(neurons, reliability)
    index = out / "index.html"
    index.write_text(
        f"<!doctype html><html><head><meta "
        f"charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{len(neurons)} neurons, "
        f"{neurons['cluster'].nunique()} clusters</p>\n{body}\n</body></html>\n"
    )
    written["index"] = index
    return written
