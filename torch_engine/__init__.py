"""PyTorch eager engine (SPEC 13): entry point `torch` of `kissing_spheres.engines`."""
