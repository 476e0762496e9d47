"""The paper's sections: one module per notebook (its grids, tables, figures, sentences and checks), and
``paper``, the numbers the paper printed. A notebook imports only its section module, ``paper`` and the
results store (``cepaper.book.results``, ``pages``); its loops, set-up and the sentences whose words depend on
the results live here. Sections import the library (``cepaper``) and save, read and show through the store;
the book's machinery never imports a section. Private modules (``_shared``, ``_<section>_page``) hold what
several sections share and what a section's page draws, exposed by the section module."""
