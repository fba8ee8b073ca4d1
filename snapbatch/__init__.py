"""snapbatch: turn a checked-in manifest into ApsaraVideo VOD SubmitSnapshotJob calls."""

__all__ = ["__version__"]

__version__ = "0.1.0"
