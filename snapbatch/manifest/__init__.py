"""The manifest side: YAML loading with positions (``located``), checks and the manifest model (``load``),
ID files and CSV columns (``ids``), expansion into requests (``expand``)."""
