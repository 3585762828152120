"""Unit tests of the kubectl plugin (`kubectl cleo`): pure rendering, no cluster."""
