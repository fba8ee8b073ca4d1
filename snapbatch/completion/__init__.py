"""What became of submitted jobs: the SnapshotComplete receiver, its event store, and the GetJobDetail poller.
Completion feeds the state from the side: events are recorded in an event store of their own, then
absorbed into each batch's state by JobId (or by the request key a job's UserData.Extend carried)."""
