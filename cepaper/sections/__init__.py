"""The paper's sections: one module per notebook (its grids, tables, figures and checks), and ``paper``,
the numbers the paper printed. Sections import the library (``cepaper``), never the book machinery."""
