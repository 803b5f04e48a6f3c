"""The engine of a ``freezelab.Task`` (your own task, or the built-in ``classify``): its public API
(``task.py``: ``Task``, ``Metric``, ``Splits``), its run config (``config.py``), the checks of what the task's
methods return (``contract.py``), the training loop (``loop.py``) and one run (``runner.py``)."""
