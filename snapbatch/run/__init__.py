"""The run side: how the rate is enforced (``limiter``), the crash-safe state file and its schema
(``state``), and the loop that sends pending requests and decides retries (``runner``)."""
