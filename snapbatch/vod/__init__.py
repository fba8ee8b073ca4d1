"""The VOD side: request signatures (``signing``), where credentials come from (``credentials``; ``chain`` for
RAM roles, ECS roles, OIDC and credentials URIs through alibabacloud-credentials), credentials that last a run
(``providers``: renewed ahead of expiry), which endpoint to call (``endpoint``), and one call -> one Outcome
(``client``)."""
