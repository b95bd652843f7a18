"""A model over HTTP (`charlm serve`): the app, its limits, the batches that step many requests as one."""
