"""The benchmark: taskbroker against Celery and Dramatiq, same machine, same servers, one run.

Run it with ``python -m bench`` (``--help`` for the options); it prints a table and writes JSON
to ``bench/results/``. Nothing here is imported by the product or asserted by the tests.
"""
