"""A task function returning something JSON cannot carry."""


def a_set() -> set[int]:
    return {1, 2}
