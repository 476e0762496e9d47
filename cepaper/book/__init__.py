"""The book's machinery: the results store (``results``), the pipeline that executes the notebooks and
renders the book (``pipeline``), and the page helpers the notebooks use (``pages``)."""
