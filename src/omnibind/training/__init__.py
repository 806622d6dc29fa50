"""Training: the loop, its callbacks, checkpoints and schedules."""
