"""A pytest plugin for the nbval run (``make test-notebooks``, ``-p tests.nbval_kernels``): nbval's
kernels talk with it over Unix sockets of their own, as the book's kernels do
(:func:`cepaper.book.pipeline.kernel_transport`), not over TCP ports that the kernels of the two
workers, starting at once, could take from one another."""

import nbval.kernel

from cepaper.book.pipeline import kernel_transport


class KernelManager(nbval.kernel.KernelManager):
    def __init__(self, **kw):
        super().__init__(**{**kernel_transport(), **kw})


nbval.kernel.KernelManager = KernelManager  # nbval.kernel.start_new_kernel builds its manager by this name
