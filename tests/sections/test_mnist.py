"""One unit for one quantity: the MNIST page's tables give test errors in percent, as Fig. 4 does."""

import pandas as pd

from cepaper.sections import mnist


def test_errors_and_their_differences_are_percent_everything_else_unchanged():
    t = pd.DataFrame({"n": [2, 4], "error": [0.0267, 0.0245], "sem": [0.0007, 0.0012], "var_ratio": [467.0, 9.98]})
    p = mnist.percent(t)
    assert p.error.tolist() == [2.67, 2.45] and p["sem"].round(6).tolist() == [0.07, 0.12]
    assert p.n.tolist() == [2, 4] and p.var_ratio.tolist() == [467.0, 9.98]
    assert t.error.tolist() == [0.0267, 0.0245], "the results' own table is not changed"


def test_the_page_table_says_percent_in_its_headers():
    summ = pd.DataFrame(
        {
            "curve": ["primal"],
            "n": [2],
            "m": [199],
            "params_ratio": [1.0],
            "var_ratio": [467.0],
            "error": [0.0267],
            "sem": [0.0007],
            "reps": [4],
        }
    )
    html = mnist.error_table(summ).to_html()
    assert "test error (%)" in html and "SE (points)" in html and "2.67" in html and "0.0267" not in html


def test_a_run_on_all_of_mnist_says_how_many_images_it_used():
    """``n_train=None`` is every image: the page's caption and set-up table give the number, not "None"."""
    assert mnist.images("train") == 60000 and mnist.images("test", None) == 10000
    assert mnist.images("train", 512) == 512
    (paper_row, ours) = mnist.setup_table("quick", 6, 200, None, 2000, 1, 2, 0.01, 128)
    assert (ours["train_images"], ours["test_images"]) == (60000, 2000) and paper_row["train_images"] == 60000


def test_the_correlations_table_names_every_statistic_in_words():
    """Every statistic the claims read (``STATISTICS``) has its word on the page, the primary one marked."""
    assert set(mnist.MEASURES) == set(mnist.STATISTICS) and set(mnist.AGAINST) == {"var", "params"}
    assert [k for k, v in mnist.MEASURES.items() if v.endswith("(primary)")] == [mnist.PRIMARY]
