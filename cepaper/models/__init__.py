"""Models of the paper: the NTK-parameterized MLP and its collegial ensemble, ResNeXt."""
