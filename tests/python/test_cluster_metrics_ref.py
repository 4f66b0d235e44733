"""moin's cluster metrics (`moin eval nmi`) against scikit-learn's, and moin's .npy files against numpy."""
import json
import os
import subprocess

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

MOIN = os.environ.get("MOIN_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "bin", "moin"))


def moin_nmi(tmp_path, labels, clusters):
    lf, cf = tmp_path / "labels.txt", tmp_path / "clusters.txt"
    lf.write_text("".join(f"{x}\n" for x in labels))
    cf.write_text("".join(f"{x}\n" for x in clusters))
    out = subprocess.run([MOIN, "eval", "nmi", "--labels", str(lf), "--clusters", str(cf), "-q"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def sk_purity(labels, clusters):
    m = contingency_matrix(labels, clusters)  # [labels x clusters]
    return m.max(axis=0).sum() / m.sum()


@pytest.mark.parametrize("seed,n,n_labels,n_clusters,noise", [
    (0, 50, 3, 4, 0.3), (1, 1000, 10, 10, 0.5), (2, 5000, 10, 50, 0.2), (3, 777, 2, 2, 1.0), (4, 300, 40, 7, 0.1)])
def test_matches_sklearn(tmp_path, seed, n, n_labels, n_clusters, noise):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_labels, n)
    # Clusters correlated with labels, partly random, so NMI is neither 0 nor 1.
    clusters = np.where(rng.random(n) < noise, rng.integers(0, n_clusters, n), labels % n_clusters)
    names = [f"src{x}" for x in labels]  # string labels, as the corpus has
    got = moin_nmi(tmp_path, names, clusters)
    assert got["n"] == n
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters), abs=1e-10)
    assert got["purity"] == pytest.approx(sk_purity(labels, clusters), abs=1e-12)
    sizes = {str(c["cluster"]): c["size"] for c in got["clusters"]}
    for c in np.unique(clusters):
        assert sizes[str(c)] == int((clusters == c).sum())


def test_bad_input_is_a_user_error(tmp_path):
    (tmp_path / "a.txt").write_text("x\ny\n")
    (tmp_path / "b.txt").write_text("1\n")
    out = subprocess.run([MOIN, "eval", "nmi", "--labels", str(tmp_path / "a.txt"), "--clusters",
                          str(tmp_path / "b.txt")], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "labels" in out.stderr
