"""The consumer process: takes a scheduler's tasks from its queue and runs them through its Runtime."""
