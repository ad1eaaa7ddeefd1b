"""CompressionKNNClassifier against plain-Python kNN on Python-gzip distances."""

from __future__ import annotations

import collections
import gzip
import os
import random

import numpy as np
import pytest

import thrifty
from thrifty.text import CompressionKNNClassifier, ncd_matrix

TOPICS = {
    "sport": "goal team match striker keeper league score win cup coach player season".split(),
    "money": "bank rate market stock share price profit loss trade dollar fund bond".split(),
    "weather": "rain sun cloud storm wind snow cold warm forecast fog frost sky".split(),
}
GLUE = "the a of and in on to with after before as".split()


def corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        lab = rng.choice(sorted(TOPICS))
        words = [rng.choice(TOPICS[lab] if rng.random() < 0.5 else GLUE)
                 for _ in range(rng.randint(4, 25))]
        texts.append(" ".join(words))
        labels.append(lab)
    return texts, labels


def gz(b: bytes) -> int:
    return len(gzip.compress(b, 9))


def ref_distances(queries: list[str], refs: list[str]) -> np.ndarray:
    """NCD with Python's gzip, query first -- the paper's code, as plainly as possible."""
    cr = [gz(r.encode()) for r in refs]
    out = []
    for q in queries:
        cq = gz(q.encode())
        out.append([(gz((q + " " + r).encode()) - min(cq, c)) / max(cq, c)
                    for r, c in zip(refs, cr)])
    return np.array(out)


def ref_knn(d: np.ndarray, labels: list, k: int):
    """Per query: neighbours (distance, then lower index), votes, tied labels."""
    out = []
    for row in d:
        nb = sorted(range(len(row)), key=lambda j: (row[j], j))[:k]
        votes = collections.Counter(labels[j] for j in nb)
        top = max(votes.values())
        tied = {lab for lab, v in votes.items() if v == top}
        nearest_tied = next(labels[j] for j in nb if labels[j] in tied)
        out.append((nb, votes, tied, nearest_tied))
    return out


@pytest.fixture(scope="module")
def data():
    train_x, train_y = corpus(60, 1)
    test_x, test_y = corpus(25, 2)
    d = ref_distances(test_x, train_x)
    return train_x, train_y, test_x, test_y, d


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_kneighbors_and_predict_match_reference(data, k):
    train_x, train_y, test_x, test_y, d = data
    clf = CompressionKNNClassifier(n_neighbors=k).fit(train_x, train_y)
    dist, ind = clf.kneighbors(test_x)
    ref = ref_knn(d, train_y, k)
    assert ind.tolist() == [r[0] for r in ref]
    assert np.array_equal(dist, np.take_along_axis(d, ind, axis=1))
    assert clf.predict(test_x).tolist() == [r[3] for r in ref]
    want_paper = np.mean([t in r[2] for t, r in zip(test_y, ref)])
    want_fair = np.mean([t == r[3] for t, r in zip(test_y, ref)])
    assert clf.score(test_x, test_y, protocol="paper") == want_paper
    assert clf.score(test_x, test_y) == want_fair
    proba = clf.predict_proba(test_x)
    assert proba.shape == (len(test_x), 3)
    for row, r in zip(proba, ref):
        assert row.tolist() == [r[1].get(c, 0) / k for c in clf.classes_]


def test_paper_score_is_top2_for_k2(data):
    train_x, train_y, test_x, test_y, _ = data
    clf = CompressionKNNClassifier(n_neighbors=2).fit(train_x, train_y)
    _, ind = clf.kneighbors(test_x)
    top2 = np.mean([t in {train_y[i] for i in row} for t, row in zip(test_y, ind)])
    assert clf.score(test_x, test_y, protocol="paper") == top2
    assert clf.score(test_x, test_y, protocol="paper") >= clf.score(test_x, test_y)


def test_k1_agrees_with_sklearn_precomputed(data):
    neighbors = pytest.importorskip("sklearn.neighbors")
    train_x, train_y, test_x, _, d = data
    ours = CompressionKNNClassifier(n_neighbors=1).fit(train_x, train_y).predict(test_x)
    sk = neighbors.KNeighborsClassifier(n_neighbors=1, metric="precomputed")
    sk.fit(ref_distances(train_x, train_x), train_y)
    unique_min = [(row == row.min()).sum() == 1 for row in d]
    pred = sk.predict(d)
    assert all(a == b for a, b, u in zip(ours, pred, unique_min) if u)
    assert sum(unique_min) > 10


def test_equal_distances_go_to_lower_index():
    train = ["same words here"] * 4 + ["other words there"]
    clf = CompressionKNNClassifier(n_neighbors=3).fit(train, ["b", "a", "a", "b", "c"])
    dist, ind = clf.kneighbors(["same words here!"])
    assert ind.tolist() == [[0, 1, 2]] and dist[0, 0] == dist[0, 2]
    # votes a=2, b=1 -> "a"
    assert clf.predict(["same words here!"]).tolist() == ["a"]
    # k=2: tie between "b" (index 0, nearest) and "a" (index 1): nearest wins.
    clf2 = CompressionKNNClassifier(n_neighbors=2).fit(train, ["b", "a", "a", "b", "c"])
    assert clf2.predict(["same words here!"]).tolist() == ["b"]
    assert clf2.score(["same words here!"], ["a"], protocol="paper") == 1.0
    assert clf2.score(["same words here!"], ["a"]) == 0.0


def test_random_tie_break_is_seeded_and_picks_tied_labels(data):
    train_x, train_y, test_x, _, d = data
    ref = ref_knn(d, train_y, 2)
    preds = []
    for seed in range(8):
        clf = CompressionKNNClassifier(n_neighbors=2, tie_break="random", seed=seed).fit(train_x, train_y)
        p = clf.predict(test_x).tolist()
        assert p == clf.predict(test_x).tolist()  # re-seeded every call
        assert all(lab in r[2] for lab, r in zip(p, ref))
        preds.append(p)
    ties = [i for i, r in enumerate(ref) if len(r[2]) > 1]
    assert ties, "the corpus should produce some 1-1 ties"
    assert len({tuple(p[i] for i in ties) for p in preds}) > 1


def test_results_independent_of_threads_and_batching(data):
    train_x, train_y, test_x, _, _ = data
    clf = CompressionKNNClassifier(n_neighbors=3).fit(train_x, train_y)
    thrifty.set_num_threads(1)
    d1, i1 = clf.kneighbors(test_x)
    thrifty.set_num_threads(2)
    d2, i2 = clf.kneighbors(test_x)
    parts = [clf.kneighbors(test_x[a:a + 7]) for a in range(0, len(test_x), 7)]
    assert np.array_equal(i1, i2) and np.array_equal(d1, d2)
    assert np.array_equal(np.vstack([p[1] for p in parts]), i1)
    with thrifty.threads(1):
        clf1 = CompressionKNNClassifier(n_neighbors=3).fit(train_x, train_y)
        assert np.array_equal(clf1.kneighbors(test_x, return_distance=False), i1)
    with thrifty.threads(None):
        assert np.array_equal(clf1.kneighbors(test_x, return_distance=False), i1)
    thrifty.set_num_threads(None)


def test_many_references_use_chunked_topk():
    # More references than one chunk (1024): merged partial heaps must equal the matrix.
    train_x, train_y = corpus(1500, 5)
    test_x, _ = corpus(3, 6)
    clf = CompressionKNNClassifier(n_neighbors=4, compressor="zstd").fit(train_x, train_y)
    dist, ind = clf.kneighbors(test_x)
    m = ncd_matrix(test_x, train_x, compressor="zstd")
    order = np.lexsort((np.broadcast_to(np.arange(1500), m.shape), m), axis=1)[:, :4]
    assert np.array_equal(ind, order)
    assert np.array_equal(dist, np.take_along_axis(m, order, axis=1))


@pytest.mark.parametrize(
    "labels",
    [
        [0, 1, 2] * 4,
        ["x", "y", "z"] * 4,
        [("t", 1), ("t", 2), None] * 4,
        [1, "one", 2.5] * 4,
    ],
)
def test_labels_any_hashable(labels):
    texts = [f"text {i % 3} " + "abc " * (i % 3 + 1) * 5 for i in range(12)]
    clf = CompressionKNNClassifier(n_neighbors=1).fit(texts, labels)
    assert len(clf.classes_) == 3
    assert list(clf.predict(texts)) == labels
    assert clf.score(texts, labels) == 1.0
    assert clf.score(texts, labels, protocol="paper") == 1.0


def test_bytes_and_str_texts_agree(data):
    train_x, train_y, test_x, _, _ = data
    a = CompressionKNNClassifier().fit(train_x, train_y).kneighbors(test_x)[1]
    enc = [t.encode() for t in train_x]
    b = CompressionKNNClassifier().fit(enc, np.array(train_y)).kneighbors(
        [t.encode() for t in test_x])[1]
    assert np.array_equal(a, b)


def test_fit_caches_compressed_lengths(data):
    train_x, train_y, *_ = data
    clf = CompressionKNNClassifier().fit(train_x, train_y)
    assert clf.compressed_lens_.tolist() == [gz(t.encode()) for t in train_x]
    assert clf.n_samples_fit_ == 60
    assert clf.get_params()["n_neighbors"] == 2
    assert clf.set_params(n_neighbors=3).n_neighbors == 3
    assert "CompressionKNNClassifier(n_neighbors=3" in repr(clf)


def test_progress_callback(data):
    train_x, train_y, test_x, _, _ = data
    seen = []
    clf = CompressionKNNClassifier(progress=lambda d, t: seen.append((d, t)))
    clf.fit(train_x, train_y).predict(test_x)
    assert seen[-1] == (25 * 61, 25 * 61)


TRAIN = ["one text", "two texts", "three texts"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: CompressionKNNClassifier().fit([], []), "empty"),
        (lambda: CompressionKNNClassifier().fit(["a", ""], [1, 2]), "empty text"),
        (lambda: CompressionKNNClassifier().fit(TRAIN, [1, 2]), "3 texts but 2 labels"),
        (lambda: CompressionKNNClassifier(n_neighbors=4).fit(TRAIN, [1, 2, 3]),
         "n_neighbors=4 is larger"),
        (lambda: CompressionKNNClassifier(n_neighbors=0).fit(TRAIN, [1, 2, 3]),
         "n_neighbors must be >= 1"),
        (lambda: CompressionKNNClassifier().fit(TRAIN, [1, 2, 3]).kneighbors(None, 3),
         "smaller than the number of training texts"),
        (lambda: CompressionKNNClassifier(compressor="lz4").fit(TRAIN, [1, 2, 3]),
         "compressor must be one of"),
        (lambda: CompressionKNNClassifier(level=12).fit(TRAIN, [1, 2, 3]), "level 12"),
        (lambda: CompressionKNNClassifier(distance="l2").fit(TRAIN, [1, 2, 3]), "distance"),
        (lambda: CompressionKNNClassifier(tie_break="first").fit(TRAIN, [1, 2, 3]), "tie_break"),
        (lambda: CompressionKNNClassifier().fit(TRAIN, [[1], [2], [3]]), "hashable"),
        (lambda: CompressionKNNClassifier().fit(TRAIN, "abc"), "sequence of labels"),
        (lambda: CompressionKNNClassifier().predict(TRAIN), "not fitted"),
        (lambda: CompressionKNNClassifier().fit(TRAIN, [1, 2, 3]).predict([b"\xff\xfe"]),
         "not valid UTF-8"),
        (lambda: CompressionKNNClassifier().fit(TRAIN, [1, 2, 3]).predict([]), "empty"),
        (lambda: CompressionKNNClassifier().fit(TRAIN, [1, 2, 3]).kneighbors(TRAIN, 4),
         "n_neighbors=4"),
        (lambda: CompressionKNNClassifier().fit(TRAIN, [1, 2, 3]).score(TRAIN, [1, 2]),
         "3 texts but 2 labels"),
        (lambda: CompressionKNNClassifier().fit(TRAIN, [1, 2, 3]).score(
            TRAIN, [1, 2, 3], protocol="top2"), "protocol"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(thrifty.InvalidInputError, match=match):
        call()


# -- real text: Debian fortunes (language identification) -----------------------------

FORTUNES = "/usr/share/games/fortunes"


def load_fortunes(lang: str, n: int, seed: int) -> list[str]:
    folder = FORTUNES if lang == "en" else os.path.join(FORTUNES, lang)
    quotes = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith((".dat", ".u8")) or not os.path.isfile(path) or os.path.islink(path):
            continue
        with open(path, "rb") as f:
            try:
                body = f.read().decode("utf-8")
            except UnicodeDecodeError:
                continue
        quotes += [q.strip() for q in body.split("\n%\n") if 40 <= len(q.strip()) <= 400]
    return random.Random(seed).sample(quotes, n)


@pytest.mark.skipif(not os.path.isdir(os.path.join(FORTUNES, "de")),
                    reason="Debian fortunes packages not installed (see .ci/run)")
def test_language_id_on_fortunes():
    langs = ["en", "de", "es", "it"]
    train, ytr, test, yte = [], [], [], []
    for lang in langs:
        q = load_fortunes(lang, 70, seed=0)
        train += q[:50]
        ytr += [lang] * 50
        test += q[50:]
        yte += [lang] * 20
    clf = CompressionKNNClassifier(n_neighbors=1).fit(train, ytr)
    assert clf.score(test, yte) >= 0.75
    assert CompressionKNNClassifier(n_neighbors=2).fit(train, ytr).score(test, yte, protocol="paper") >= 0.85


def test_numpy_inputs_and_unknown_score_labels(data):
    train_x, train_y, test_x, test_y, _ = data
    clf = CompressionKNNClassifier(n_neighbors=1).fit(np.array(train_x), np.array(train_y))
    assert clf.classes_.tolist() == sorted(set(train_y))
    pred = clf.predict(np.array(test_x))
    assert pred.tolist() == clf.predict(test_x).tolist()
    # A label never seen in fit can never be predicted: it counts as wrong.
    assert clf.score(test_x[:1], ["never-seen"]) == 0.0
    assert clf.score(test_x[:1], ["never-seen"], protocol="paper") == 0.0


@pytest.mark.skipif(not os.path.isdir(os.path.join(FORTUNES, "de")),
                    reason="Debian fortunes packages not installed (see .ci/run)")
def test_pair_lengths_equal_python_gzip_on_real_multilingual_text():
    # The level-9 pair path computes C(query + " " + ref) without zlib
    # (thrifty_core::text::deflate9); check it against Python's gzip on real quotes in
    # four languages, and on longer pairs.
    from thrifty.text import ncd_matrix

    texts = [t for lang in ("en", "de", "es", "it") for t in load_fortunes(lang, 30, seed=3)]
    queries, refs = texts[::4], texts
    got = ncd_matrix(queries, refs)
    enc = [t.encode() for t in texts]
    c = {t: len(gzip.compress(t, 9)) for t in enc}
    want = np.array([[(len(gzip.compress(q + b" " + r, 9)) - min(c[q], c[r])) / max(c[q], c[r])
                      for r in enc] for q in enc[::4]])
    assert np.array_equal(got, want)
    long = [t * 3 for t in texts[:6]]
    got_long = ncd_matrix(long, texts[:10])
    want_long = np.array([[(len(gzip.compress(q.encode() + b" " + r.encode(), 9))
                            - min(len(gzip.compress(q.encode(), 9)), c[r.encode()]))
                           / max(len(gzip.compress(q.encode(), 9)), c[r.encode()])
                           for r in texts[:10]] for q in long])
    assert np.array_equal(got_long, want_long)


def test_threads_block_never_changes_the_global_thread_count(data):
    # thrifty.threads(n) applies to the calling thread only; the process-wide setting
    # stays as the user set it (two threads with different counts cannot race on it).
    train_x, train_y, test_x, _, _ = data
    seen = []
    try:
        thrifty.set_num_threads(2)
        clf = CompressionKNNClassifier(
            n_neighbors=1, progress=lambda done, total: seen.append(thrifty.get_num_threads())
        ).fit(train_x, train_y)
        assert seen and set(seen) == {2}
        seen.clear()
        with thrifty.threads(1):
            clf.predict(test_x)
        assert seen and set(seen) == {1}
        assert thrifty.get_num_threads() == 2
    finally:
        thrifty.set_num_threads(None)


def test_kneighbors_without_x_excludes_each_text_itself(data):
    train_x, train_y, *_ = data
    clf = CompressionKNNClassifier(n_neighbors=3).fit(train_x, train_y)
    dist, ind = clf.kneighbors()
    full_d, full_i = clf.kneighbors(train_x, n_neighbors=4)
    for r in range(len(train_x)):
        keep = full_i[r] != r if (full_i[r] == r).any() else np.arange(4) < 3
        assert ind[r].tolist() == full_i[r][keep].tolist()
        assert dist[r].tolist() == full_d[r][keep].tolist()
        assert r not in ind[r]


def test_sklearn_pipeline_grid_search_and_cross_val_score_on_raw_texts(data):
    from sklearn.base import clone, is_classifier
    from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    train_x, train_y, test_x, test_y, _ = data
    assert is_classifier(CompressionKNNClassifier())
    pipe = Pipeline([("lower", FunctionTransformer(lambda t: [s.lower() for s in t])),
                     ("knn", CompressionKNNClassifier(n_neighbors=1, progress=False))])
    pipe.fit(train_x, train_y)
    direct = CompressionKNNClassifier(n_neighbors=1).fit([t.lower() for t in train_x], train_y)
    assert pipe.score(test_x, test_y) == direct.score([t.lower() for t in test_x], test_y)
    cv = KFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(CompressionKNNClassifier(n_neighbors=1), train_x, train_y, cv=cv)
    assert np.isfinite(scores).all() and scores.shape == (3,)
    # the CV scores equal a hand-written loop over the same folds
    xs, ys = np.array(train_x, dtype=object), np.array(train_y)
    want = [CompressionKNNClassifier(n_neighbors=1).fit(list(xs[a]), ys[a]).score(list(xs[b]), ys[b])
            for a, b in cv.split(xs)]
    assert scores.tolist() == want
    gs = GridSearchCV(CompressionKNNClassifier(), {"n_neighbors": [1, 3], "compressor": ["gzip", "zstd"]},
                      cv=cv).fit(train_x, train_y)
    means = gs.cv_results_["mean_test_score"]
    assert np.isfinite(means).all()
    assert gs.best_params_ == gs.cv_results_["params"][int(np.argmax(means))]
    assert clone(gs.best_estimator_).get_params() == gs.best_estimator_.get_params()
