"""How the book's pages show tables: no index column, "—" for an undefined value, rounded numbers."""

import pandas as pd


def table(df, digits=3, na="—"):
    """A DataFrame (or a list of dicts) as a page shows it: a pandas ``Styler`` without the index,
    ``na`` in undefined cells (NaN, None) and floats to ``digits`` decimals."""
    df = pd.DataFrame(df).reset_index(drop=True)
    return df.style.hide(axis="index").format(precision=digits, na_rep=na, thousands=",")
