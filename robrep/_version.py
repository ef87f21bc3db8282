"""robrep's version, importable without importing the package's front door (which brings the whole harness)."""
__version__ = "0.2.0"
