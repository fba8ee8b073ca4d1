"""The VOD side: request signatures (``signing``), where credentials come from (``credentials``), which
endpoint to call (``endpoint``), and one call -> one Outcome (``client``)."""
