"""The commands that run the pipeline as a whole: the worker, the demo and retrospective batches."""
